"""Many workers on one study: opening storages (:mod:`~optuna_biotune.runtime.storage`), the
worker storage with its identity and recovery (:mod:`~optuna_biotune.runtime.workers`; its
one-query/one-transaction operations for the samplers in :mod:`~optuna_biotune.runtime.queries`),
and the
run loop with its progress and out-of-memory handling (:mod:`~optuna_biotune.runtime.loop`), and
a generational search's rounds of it (:mod:`~optuna_biotune.runtime.generational`). No torch
here. Nothing is imported here: import the module you need.
"""

"""Many workers on one study: opening storages (:mod:`~optuna_biotune.runtime.storage`).

Phase 2 of issue 13 moves the worker storage, the run loop and its progress, signal and
out-of-memory handling here from :mod:`optuna_biotune.workers`. Nothing is imported here.
"""

"""BioTune (Colan et al., evolutionary selective fine-tuning), the method in one folder.

- :mod:`~optuna_biotune.biotune.genome`: the genes, threshold and learning-rate weights
  (paper eq. 2-5);
- :mod:`~optuna_biotune.biotune.operators` and :mod:`~optuna_biotune.biotune.memetic`: BioIK's
  memetic evolution (pure operators, the strategy on :mod:`optuna_biotune.evolution`);
- :mod:`~optuna_biotune.biotune.sampler`: ``BioTuneSampler`` (no torch);
- :mod:`~optuna_biotune.biotune.objective`: ``BioTuneObjective``, the Optuna adapter on the
  engine's fine-tuner (:mod:`optuna_biotune.engine.finetune`);
- :mod:`~optuna_biotune.biotune.spec`, :mod:`~optuna_biotune.biotune.final`,
  :mod:`~optuna_biotune.biotune.report` (with :mod:`~optuna_biotune.biotune.figures` and
  :mod:`~optuna_biotune.biotune.render`), :mod:`~optuna_biotune.biotune.cli` and
  :mod:`~optuna_biotune.biotune.search`: the product (study specs, the final retraining,
  reports, the ``search``/``final``/``report``/``dashboard`` commands).

Nothing is imported here, so ``import optuna_biotune`` and ``BioTuneSampler()`` stay light.
"""

"""The torch layer every method shares (BioTune, EvoPrune and the baselines).

- :mod:`~optuna_biotune.engine.data`: data types, train/val/test splits, stratified folds;
- :mod:`~optuna_biotune.engine.sources`: dataset specs read into splits (``load_dataset``);
- :mod:`~optuna_biotune.engine.models`, :mod:`~optuna_biotune.engine.blocks`,
  :mod:`~optuna_biotune.engine.fastconv`: backbones, heads, block partitions, the 1x1 shortcut;
- :mod:`~optuna_biotune.engine.cache`: the frozen-prefix activation cache;
- :mod:`~optuna_biotune.engine.train`: the one training engine (``fit``, ``evaluate``);
- :mod:`~optuna_biotune.engine.finetune`: a model fine-tuned from its pretrained state with a
  block mask and per-block learning-rate weights;
- :mod:`~optuna_biotune.engine.seeds`: the authors' seeds and the spread over seeds
  (no torch).
- :mod:`~optuna_biotune.engine.budget`: the paper's per-run training budget, the defaults of
  every training setting (no torch).

Nothing is imported here: each module loads torch only when it is imported.
"""

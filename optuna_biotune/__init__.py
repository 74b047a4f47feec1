"""optuna-biotune: evolutionary selective fine-tuning (BioTune) for Optuna.

The samplers and the genome helpers import without torch; the torch-based objectives are
loaded on first access.
"""

from __future__ import annotations

from typing import Any

from optuna_biotune.biotune.genome import decode, decode_params, gene_names, lr_weight

__version__ = "0.1.0"

# Public names loaded on first use so `import optuna_biotune` stays light (no torch).
_LAZY = {
    "BioTuneSampler": "optuna_biotune.biotune.sampler",
    "BioTuneObjective": "optuna_biotune.biotune.objective",
    "EvoPruneSampler": "optuna_biotune.evoprune",
    "EvoPruneObjective": "optuna_biotune.evoprune",
}

__all__ = [
    "BioTuneObjective",
    "BioTuneSampler",
    "EvoPruneObjective",
    "EvoPruneSampler",
    "__version__",
    "decode",
    "decode_params",
    "gene_names",
    "lr_weight",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'optuna_biotune' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

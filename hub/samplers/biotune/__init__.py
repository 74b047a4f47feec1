"""BioTune's memetic evolutionary sampler as an OptunaHub package.

BioTune (Colan, Davila, Hasegawa, IEEE Access 2025, Sec. III) evolves the genes of selective
fine-tuning with BioIK's memetic evolution (Starke et al., IEEE TEC 2019); the sampler and the
genome helpers (paper eq. 2-5) live in the ``optuna-biotune`` package, which this folder
exposes under the registry's layout: ``pip install -r requirements.txt`` first.
"""

from __future__ import annotations

try:
    from optuna_biotune import BioTuneSampler, decode, gene_names
except ImportError as exc:  # pragma: no cover - depends on the user's environment
    raise ImportError(
        "samplers/biotune needs the optuna-biotune package: pip install optuna-biotune"
    ) from exc

__all__ = ["BioTuneSampler", "decode", "gene_names"]

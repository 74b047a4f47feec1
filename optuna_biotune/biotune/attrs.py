"""The study user attrs BioTune writes, in one place (read by ``final``, ``report``, the
dashboard and a resumed ``search``); CONTRIBUTING.md describes what each holds."""

from __future__ import annotations

#: The objective's constructor arguments (:meth:`.objective.BioTuneObjective.spec`).
OBJECTIVE_SPEC_ATTR = "biotune:spec"
#: The TOML tables of the :class:`.spec.StudySpec` that made the study.
STUDY_ATTR = "biotune:study"
#: Absolute artifact folder of the study.
ARTIFACTS_ATTR = "biotune:artifacts"
#: The ``final`` results (:mod:`.final`).
FINAL_ATTR = "biotune:final"
#: Prefix of one retrained configuration's test accuracies: ``biotune:final:<key>``.
FINAL_CACHE_PREFIX = "biotune:final:"
#: Wall seconds of one full-data FT run timed in the study (``{"seconds", "source"}``): the
#: unit of the compute shown while a search runs (:mod:`.compute`).
FT_UNIT_ATTR = "biotune:ft_unit"
#: Artifact ids of the latest report (name -> id), replaced each time.
REPORT_ARTIFACTS_ATTR = "biotune:report_artifacts"
#: Keys of ``biotune:spec``, in order: the arguments of
#: :class:`optuna_biotune.biotune.objective.BioTuneObjective` (``SPEC_KEYS`` there); a study
#: spec's ``[objective]`` table takes those not in :data:`API_ONLY_SPEC_KEYS` (``max_epochs``
#: as ``epochs``).
OBJECTIVE_SPEC_KEYS = (
    "dataset",
    "model",
    "partition",
    "seeds",
    "data_fraction",
    "max_epochs",
    "patience",
    "batch_size",
    "base_lr",
    "optimizer",
    "metric",
    "device",
    "image_size",
    "cache_bytes",
    "use_cache",
    "compile",
    "prune",
    "exact_protocol",
)
#: Objective arguments only the Python API sets (memory, compilation, pruning).
API_ONLY_SPEC_KEYS = ("cache_bytes", "use_cache", "compile", "prune")
#: The protocol the study is searched with (``exact_protocol``, bool), written by the objective.
PROTOCOL_ATTR = "biotune:exact_protocol"

__all__ = [
    "API_ONLY_SPEC_KEYS",
    "ARTIFACTS_ATTR",
    "FINAL_ATTR",
    "FINAL_CACHE_PREFIX",
    "FT_UNIT_ATTR",
    "OBJECTIVE_SPEC_ATTR",
    "OBJECTIVE_SPEC_KEYS",
    "PROTOCOL_ATTR",
    "REPORT_ARTIFACTS_ATTR",
    "STUDY_ATTR",
]

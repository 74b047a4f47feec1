"""The study user attrs BioTune writes, in one place (read by ``final``, ``report``, the
dashboard and a resumed ``search``); CONTRIBUTING.md describes what each holds."""

from __future__ import annotations

#: The study's settings, stored once: :meth:`.spec.StudySpec.stored` (``search``), or the
#: objective's keywords (:meth:`.objective.BioTuneObjective.spec`, written at its first
#: evaluation when a study has none).
OBJECTIVE_SPEC_ATTR = "biotune:spec"
#: Absolute artifact folder of the study.
ARTIFACTS_ATTR = "biotune:artifacts"
#: The ``final`` results (:mod:`.final`).
FINAL_ATTR = "biotune:final"
#: Prefix of one retrained configuration's test accuracies: ``biotune:final:<key>``.
FINAL_CACHE_PREFIX = "biotune:final:"
#: Prefix of a one-seed value that ``final`` re-scored at full fidelity because it could enter
#: the top-k (:func:`.final.rescore_missing`): ``biotune:rescored:<trial number>`` holds
#: ``{"seed_accuracies", "epochs", "fidelity", "value", "seconds"}``.
RESCORED_PREFIX = "biotune:rescored:"
#: Wall seconds of one full-data FT run timed in the study (``{"seconds", "source"}``): the
#: unit of the compute shown while a search runs (:mod:`.compute`).
FT_UNIT_ATTR = "biotune:ft_unit"
#: Artifact ids of the latest report (name -> id), replaced each time.
REPORT_ARTIFACTS_ATTR = "biotune:report_artifacts"

__all__ = [
    "ARTIFACTS_ATTR",
    "FINAL_ATTR",
    "FINAL_CACHE_PREFIX",
    "FT_UNIT_ATTR",
    "OBJECTIVE_SPEC_ATTR",
    "REPORT_ARTIFACTS_ATTR",
    "RESCORED_PREFIX",
]

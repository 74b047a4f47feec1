"""The default search's rungs and promotion (`biotune/rungs.py`)."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from optuna_biotune import BioTuneObjective
from optuna_biotune.biotune import rungs
from optuna_biotune.biotune.genome import gene_names
from optuna_biotune.biotune.racing import Bar

LITE0_BLOCKS = [f"blocks.{i}" for i in range(7)] + ["conv_head", "classifier"]


def test_a_first_seed_goes_on_while_fewer_than_eta_reached_its_rung() -> None:
    r = rungs.Rungs(at_rung={2: [0.9] * (rungs.ETA - 1)}, completed=[])
    assert not r.cut(2, 0.1)
    assert not r.cut(3, 0.1)  # no rung at epoch 3


def test_a_first_seed_below_the_top_share_at_its_rung_stops() -> None:
    r = rungs.Rungs(at_rung={2: [0.5, 0.6, 0.7, 0.8]}, completed=[])
    need = float(sorted([0.5, 0.6, 0.7, 0.8])[2])  # the 2/3 quantile lies between 0.7 and 0.8
    assert r.cut(2, 0.69) and r.bound == 0.69 and 0.7 <= r.bar.value <= need
    assert not r.cut(2, 0.8)


def test_promotion_needs_the_bar_or_without_one_a_new_best_first_seed() -> None:
    # A record among fewer than ETA - 1 earlier completed first seeds is no evidence.
    assert rungs.ETA - 1 == 2
    assert not rungs.Rungs(at_rung={}, completed=[]).promote(0.1, None)
    r = rungs.Rungs(at_rung={}, completed=[0.8])
    assert not r.promote(0.99, None) and r.bar.value == float("inf")
    assert r.promote(0.5, Bar(0.5, "elite #0"), role="exploit")  # a bred one with a bar
    r = rungs.Rungs(at_rung={}, completed=[0.8, 0.9])
    assert not r.promote(0.89, None) and r.bar.value == 0.9
    assert r.promote(0.9, None) and r.promote(0.91, None)  # a tie with the record goes on
    assert r.promote(0.7, Bar(0.7, "elite #0"), role="exploit")
    assert r.promote((0.7 + 0.7 + 0.7) / 3, Bar(0.7, "elite #0"), role="exploit")  # last bit
    assert not r.promote(0.69, Bar(0.7, "elite #0"), role="exploit")
    assert r.bar.against == "elite #0"
    # A bred candidate without a bar (fewer full members than elites) needs a record too.
    for role in rungs.BRED:
        assert not r.promote(0.1, None, role=role) and r.promote(0.9, None, role=role)
    # A fresh individual, or a trial no generational sampler planned, needs a record.
    for role in ("initial", None):
        assert not r.promote(0.85, Bar(0.7, "3th best so far"), role=role)
        assert r.bar.value == 0.9 and r.promote(0.95, Bar(0.7, "3th best so far"), role=role)


#: A tiny objective: two seeds, 4 epochs (rung 2 applies, 6 does not), a tenth of the data.
SETTINGS = dict(
    seeds=[684, 559], data_fraction=0.1, max_epochs=4, patience=4, image_size=16, device="cpu"
)


@pytest.fixture(scope="module")
def objective() -> BioTuneObjective:
    return BioTuneObjective(**SETTINGS)


def _evaluate(objective: BioTuneObjective, study: optuna.Study) -> optuna.trial.FrozenTrial:
    """Evaluate the test configuration after the study's earlier trials."""
    study.enqueue_trial(_params())
    study.optimize(objective, n_trials=1)
    return study.trials[-1]


def _params() -> dict[str, float]:
    values = [0.2] * 7 + [0.9, 0.9]  # conv_head and the head train
    return dict(zip(gene_names(LITE0_BLOCKS), [*values, 0.5], strict=True))


def _earlier(study: optuna.Study, *, curve: dict[int, float], first: float | None) -> None:
    """An earlier evaluation: its first seed's curve, and (``first``) a first seed that trained
    to its end with that value, not promoted."""
    attrs = {}
    if first is not None:
        attrs = {
            "seed_accuracies": [first],
            "fidelity": {"seeds": 1, "of": 2, "stops": ["patience"], "full": False},
        }
    dists = {name: FloatDistribution(0, 1) for name in _params()}
    study.add_trial(
        create_trial(
            params=_params() | {"threshold": 0.6},
            distributions=dists,
            value=first if first is not None else 0.0,
            intermediate_values=curve,
            user_attrs=attrs,
        )
    )


def test_a_first_seed_below_its_rung_stops_there_at_partial_fidelity(objective) -> None:
    study = optuna.create_study(direction="maximize")
    for _ in range(rungs.ETA):
        _earlier(study, curve={1: 1.0, 2: 1.0}, first=None)
    t = _evaluate(objective, study)
    assert t.state == TrialState.COMPLETE
    cut = t.user_attrs["raced"]
    assert cut["seed"] == 1 and cut["epoch"] == 2 and cut["bar"] == 1.0
    assert sorted(t.intermediate_values) == [1, 2]  # it trained two epochs, then stopped
    record = t.user_attrs["fidelity"]
    assert record["stops"] == ["cut"] and record["epochs"] == [2] and not record["full"]
    assert t.value == pytest.approx(max(t.intermediate_values.values()))


def test_a_first_seed_below_the_best_completed_one_is_not_promoted(objective) -> None:
    study = optuna.create_study(direction="maximize")
    _earlier(study, curve={}, first=0.5)
    _earlier(study, curve={}, first=1.0)
    t = _evaluate(objective, study)
    cut = t.user_attrs["raced"]
    assert cut["seed"] == 2 and cut["epoch"] == 0 and cut["bar"] == 1.0
    assert len(t.user_attrs["seed_accuracies"]) == 1
    assert t.user_attrs["fidelity"]["stops"] == ["limit"] and not t.user_attrs["fidelity"]["full"]


def test_a_record_first_seed_is_promoted_only_after_eta_minus_one_completed_ones(
    objective,
) -> None:
    study = optuna.create_study(direction="maximize")
    _earlier(study, curve={}, first=0.0)
    t = _evaluate(objective, study)  # a record, but among one completed first seed
    assert t.user_attrs["raced"]["seed"] == 2 and not t.user_attrs["fidelity"]["full"]
    assert len(t.user_attrs["seed_accuracies"]) == 1


def test_a_promoted_candidate_trains_every_seed_at_full_fidelity(objective) -> None:
    study = optuna.create_study(direction="maximize")
    for _ in range(rungs.ETA - 1):
        _earlier(study, curve={}, first=0.0)
    t = _evaluate(objective, study)
    assert "raced" not in t.user_attrs
    assert len(t.user_attrs["seed_accuracies"]) == 2 and t.user_attrs["fidelity"]["full"]


def test_the_exact_protocol_has_no_rungs_and_no_promotion() -> None:
    exact = BioTuneObjective(**SETTINGS, exact_protocol=True)
    study = optuna.create_study(direction="maximize")
    for _ in range(rungs.ETA):
        _earlier(study, curve={1: 1.0, 2: 1.0}, first=1.0)
    t = _evaluate(exact, study)
    assert "raced" not in t.user_attrs and t.user_attrs["fidelity"]["full"]

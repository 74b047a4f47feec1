"""Every fitness at its true fidelity (``biotune.fidelity``): the record each evaluation of a
real ``BioTuneObjective`` writes (full, raced, pruned, memoised, invalid), the sampler's
population and bars from full values, and ``final``'s top-k from full evaluations only."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from product_studies import CheapRetrainer, earlier_first_seeds

from optuna_biotune import BioTuneObjective, BioTuneSampler
from optuna_biotune.biotune import fidelity, final, racing, report, rungs
from optuna_biotune.biotune.genome import gene_names

optuna.logging.set_verbosity(optuna.logging.WARNING)
LITE0_BLOCKS = ["stem", *(f"blocks.{i}" for i in range(7)), "conv_head", "classifier"]


def test_the_record_says_full_only_for_every_seed_to_its_end_on_the_spec_data() -> None:
    done = [fidelity.STOP_PATIENCE, fidelity.STOP_LIMIT]
    base = dict(epochs=[3, 5], n_seeds=2, max_epochs=5, data_fraction=0.5)
    record = fidelity.fidelity_record(stops=done, spec_data_fraction=0.5, **base)
    assert record == {
        "seeds": 2,
        "of": 2,
        "epochs": [3, 5],
        "stops": ["patience", "limit"],
        "max_epochs": 5,
        "data_fraction": 0.5,
        "full": True,
    }
    assert fidelity.is_full({fidelity.FIDELITY_ATTR: record})
    cut = [fidelity.STOP_PATIENCE, fidelity.STOP_CUT]
    assert not fidelity.fidelity_record(stops=cut, spec_data_fraction=0.5, **base)["full"]
    one = dict(base, epochs=[3])
    assert not fidelity.fidelity_record(stops=done[:1], spec_data_fraction=0.5, **one)["full"]
    assert not fidelity.fidelity_record(stops=done, spec_data_fraction=1.0, **base)["full"]
    invalid = fidelity.fidelity_record(stops=[], spec_data_fraction=0.5, invalid=True, **one)
    assert invalid["full"] and invalid["seeds"] == 0  # nothing to train: 0 is its fitness
    # Before the record: only racing cut; other objectives' trials are full.
    assert not fidelity.is_full({"raced": {"seed": 1}}) and fidelity.is_full({})
    # Below full fidelity only for missing seeds (what `final` can re-score): not cut, not full.
    first = fidelity.fidelity_record(stops=done[:1], spec_data_fraction=0.5, **one)
    assert fidelity.only_seeds_missing({fidelity.FIDELITY_ATTR: first})
    partial = fidelity.fidelity_record(stops=cut, spec_data_fraction=0.5, **base)
    assert not fidelity.only_seeds_missing({fidelity.FIDELITY_ATTR: partial})
    assert not fidelity.only_seeds_missing({fidelity.FIDELITY_ATTR: record})  # full
    assert not fidelity.only_seeds_missing({fidelity.FIDELITY_ATTR: invalid})  # full, no seed
    assert not fidelity.only_seeds_missing({})


# ---- the record of a real evaluation (digits, 2 seeds, 2 epochs)


@pytest.fixture(scope="module")
def objectives() -> dict[bool, BioTuneObjective]:
    kwargs = dict(seeds=2, max_epochs=2, patience=1, data_fraction=0.1, image_size=16)
    return {
        exact: BioTuneObjective(dataset="digits", device="cpu", exact_protocol=exact, **kwargs)
        for exact in (False, True)
    }


def _params(*, valid: bool = True) -> dict[str, float]:
    values = [0.2] * 8 + [0.9, 0.9]  # conv_head and the head train
    return dict(zip(gene_names(LITE0_BLOCKS), [*values, 0.5 if valid else 0.95], strict=True))


def _record(t: optuna.trial.FrozenTrial) -> dict:
    return t.user_attrs[fidelity.FIDELITY_ATTR]


def test_full_and_memoised_evaluations_record_full_fidelity(objectives) -> None:
    study = optuna.create_study(direction="maximize")
    earlier_first_seeds(study, objectives[False].param_names)  # so that the first is promoted
    for _ in range(2):
        study.enqueue_trial(_params())
    study.enqueue_trial(_params(valid=False))
    study.optimize(objectives[False], n_trials=3)
    first, again, invalid = study.trials[-3:]
    record = _record(first)
    assert record["full"] and record["seeds"] == record["of"] == 2
    assert record["epochs"] == first.user_attrs["epochs"] and record["max_epochs"] == 2
    assert all(s in fidelity.COMPLETE_STOPS for s in record["stops"])
    assert record["data_fraction"] == 0.1
    assert again.user_attrs["memoised"] == first.number and _record(again) == record  # inherited
    assert invalid.user_attrs["invalid"] and _record(invalid)["full"]
    assert _record(invalid)["seeds"] == 0


def _race(bar: float) -> racing.Race:
    flat = tuple((n, 2, (0.0, 0.0)) for n in range(3))  # no curve near: a seed may reach 1
    return racing.Race(
        bar=racing.Bar(bar, "elite #0"),
        margins=racing.Margins(running=flat, seed=(0.0, 0.0)),
        n_seeds=2,
    )


def _rungs(at_first_epoch: list[float]) -> rungs.Rungs:
    """Rungs after ``ETA - 1`` completed first seeds at 0 (a better first seed is promoted)."""
    return rungs.Rungs(at_rung={1: at_first_epoch}, completed=[0.0] * (rungs.ETA - 1))


@pytest.mark.parametrize(
    "between_seeds",
    [
        False,  # the first seed below its rung: cut after the first epoch
        True,  # not promoted: seed 1 ended by itself below its bar, seed 2 untrained
    ],
)
def test_a_raced_evaluation_records_its_partial_fidelity(
    objectives, monkeypatch: pytest.MonkeyPatch, between_seeds: bool
) -> None:
    race = _race(1.5)
    schedule = _rungs([] if between_seeds else [1.0] * rungs.ETA)
    monkeypatch.setattr(racing.Race, "for_trial", classmethod(lambda cls, *a, **k: race))
    monkeypatch.setattr(rungs.Rungs, "for_trial", classmethod(lambda cls, *a, **k: schedule))
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(_params())
    study.optimize(objectives[False], n_trials=1)
    t = study.trials[0]
    record = _record(t)
    assert t.user_attrs["raced"] and not record["full"]
    assert record["seeds"] == 1 and record["of"] == 2
    (stop,) = record["stops"]
    assert (stop in fidelity.COMPLETE_STOPS) is between_seeds
    assert (stop == fidelity.STOP_CUT and record["epochs"] == [1]) is not between_seeds
    assert not fidelity.is_full(t.user_attrs)
    # A partial evaluation is never reused for the same configuration.
    study.enqueue_trial(_params())
    monkeypatch.setattr(racing.Race, "for_trial", classmethod(lambda cls, *a, **k: None))
    monkeypatch.setattr(rungs.Rungs, "for_trial", classmethod(lambda cls, *a, **k: _rungs([])))
    study.optimize(objectives[False], n_trials=1)
    assert "memoised" not in study.trials[1].user_attrs and _record(study.trials[1])["full"]


class _PruneAll(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_a_pruned_evaluation_records_its_cut() -> None:
    objective = BioTuneObjective(
        dataset="digits",
        seeds=2,
        max_epochs=2,
        patience=1,
        data_fraction=0.1,
        image_size=16,
        device="cpu",
        prune=True,
        exact_protocol=True,
    )
    study = optuna.create_study(direction="maximize", pruner=_PruneAll())
    study.enqueue_trial(_params())
    study.optimize(objective, n_trials=1)
    t = study.trials[0]
    assert t.state == TrialState.PRUNED
    assert _record(t) == {
        "seeds": 1,
        "of": 2,
        "epochs": [1],
        "stops": ["cut"],
        "max_epochs": 2,
        "data_fraction": 0.1,
        "full": False,
    }


# ---- the sampler reads the fidelity of each trial


def test_the_sampler_ranks_a_partial_member_last_and_bars_elites_on_full_values() -> None:
    sampler = BioTuneSampler(population_size=3, n_elites=1, seed=0, threshold_param=None)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    values = {0: 0.5, 1: 0.9, 2: 0.7, 3: 0.1}
    bars: list = []

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("a", 0.0, 1.0)
        trial.suggest_float("b", 0.0, 1.0)
        bars.append(racing.entry_bar(trial, study))
        if trial.number == 1:  # measured 0.9 on one seed and cut
            stops = [fidelity.STOP_CUT]
            record = fidelity.fidelity_record(
                stops=stops,
                epochs=[1],
                n_seeds=2,
                max_epochs=2,
                data_fraction=1.0,
                spec_data_fraction=1.0,
            )
            trial.set_user_attr(fidelity.FIDELITY_ATTR, record)
        return values[trial.number]

    study.optimize(objective, n_trials=4)
    record = study.trials[3].system_attrs["BioTuneSampler:record:1"]
    assert record["state"]["members"] == [2, 0, 1] and record["state"]["partial"] == [1]
    # The elite is the best full member (0.7), not the partial 0.9 (the old code's elite).
    assert study.trials[3].system_attrs["BioTuneSampler:slot"]["parents"] == [2]
    assert bars[3] == racing.Bar(0.7, "elite #2")
    assert bars[2].value == 0.5  # generation 0: the best full sibling (old code: 0.9)


# ---- final's top-k


def _trial(value: float, mask: list[bool], *, seeds: int = 2, **attrs) -> optuna.trial.FrozenTrial:
    stops = [fidelity.STOP_PATIENCE] * seeds
    record = fidelity.fidelity_record(
        stops=stops,
        epochs=[3] * seeds,
        n_seeds=2,
        max_epochs=5,
        data_fraction=0.5,
        spec_data_fraction=0.5,
    )
    return create_trial(
        value=value,
        user_attrs={
            "blocks": ["a", "b", "c"],
            "mask": mask,
            "lr_weights": [1.0 if m else 0.0 for m in mask],
            fidelity.FIDELITY_ATTR: record,
            **attrs,
        },
    )


def test_top_configurations_hold_full_fidelity_evaluations_only() -> None:
    study = optuna.create_study(direction="maximize")
    study.add_trial(_trial(0.95, [True, True, True]))
    study.add_trial(_trial(0.99, [False, True, True], seeds=1))  # 1 seed, cut: partial
    study.add_trial(_trial(0.90, [False, False, True]))
    study.add_trial(_trial(0.93, [False, True, True]))  # the same configuration, in full
    # Cut before the record existed: no `fidelity`, a `raced` attr.
    study.add_trial(_trial(0.97, [True, False, True], fidelity=None, raced={"seed": 2}))
    top = report.top_configurations(study, 3)
    assert [r["trial"] for r in top] == [0, 3, 2]  # old code: 1 first, 4 second
    assert report.best_summary(study)["best_value"] == 0.95
    result = final.run_final(study, objective=CheapRetrainer(), top_k=2)
    assert [r["trial"] for r in result["configurations"]] == [0, 3]
    lines: list[str] = []
    result = final.run_final(study, objective=CheapRetrainer(), top_k=5, log=lines.append)
    assert [r["trial"] for r in result["configurations"]] == [0, 3, 2]
    assert any("3 distinct configuration(s)" in line and "top_k=5" in line for line in lines)
    only_partial = optuna.create_study(direction="maximize")
    only_partial.add_trial(_trial(0.99, [False, True, True], seeds=1))
    with pytest.raises(Exception, match="no completed trial at full fidelity"):
        final.run_final(only_partial, objective=CheapRetrainer(), top_k=2)


def test_final_rescores_the_one_seed_values_that_could_enter_the_top_k() -> None:
    study = optuna.create_study(direction="maximize")
    study.add_trial(_trial(0.95, [True, True, True]))  # 0: full
    study.add_trial(_trial(0.90, [False, False, True]))  # 1: full
    study.add_trial(_trial(0.97, [True, False, True], seeds=1))  # 2: one seed to its end
    study.add_trial(_trial(0.96, [True, True, False], seeds=1))  # 3
    study.add_trial(_trial(0.93, [False, True, False], seeds=1))  # 4
    study.add_trial(_trial(0.98, [True, True, True], seeds=1))  # 5: configuration 0, in full
    cut = _trial(0.99, [False, True, True], seeds=1)  # 6: its seed cut, not to its end
    cut.user_attrs[fidelity.FIDELITY_ATTR]["stops"] = [fidelity.STOP_CUT]
    study.add_trial(cut)
    study.add_trial(_trial(0.99, [False] * 3, seeds=1))  # 7: nothing trains (invalid)

    def numbers(k: int) -> list[int]:
        return [t.number for t in report.rescore_candidates(study, k)]

    assert numbers(1) == [2]  # above the best full value (0.95)
    assert numbers(2) == [2, 3]  # above the 2nd best full value (0.90), at most 2
    assert numbers(3) == [2, 3, 4]  # fewer than 3 full values: the 3 best one-seed ones
    assert numbers(5) == [2, 3, 4]


def test_final_rescores_the_best_one_seed_values_when_the_search_left_no_full_one(
    objectives,
) -> None:
    objective = objectives[False]
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(_params())
    study.enqueue_trial(_params() | {"importance:classifier": 0.6})
    study.optimize(objective, n_trials=2)  # fewer than ETA - 1 completed first seeds before each
    assert not any(fidelity.is_full(t.user_attrs) for t in study.trials)
    assert report.top_configurations(study, 2) == []
    candidates = report.rescore_candidates(study, 1)
    best = max(study.trials, key=lambda t: (t.value, -t.number))
    assert [t.number for t in candidates] == [best.number]
    lines: list[str] = []
    result = final.run_final(study, objective=objective, top_k=1, seeds=[1001], log=lines.append)
    again = study.user_attrs[f"biotune:rescored:{best.number}"]
    assert again["fidelity"]["full"] and again["fidelity"]["seeds"] == 2
    assert again["seed_accuracies"][0] == best.user_attrs["seed_accuracies"][0]
    assert again["value"] == pytest.approx(sum(again["seed_accuracies"]) / 2)
    (top,) = result["configurations"]
    assert top["trial"] == best.number and top["validation"] == again["value"]
    assert top["rescored"] and result["rescored"] == [best.number]
    assert any(f"re-scoring trial #{best.number}" in line for line in lines)
    # Stored: a second `final` trains nothing again.
    lines.clear()
    final.run_final(study, objective=objective, top_k=1, seeds=[1001], log=lines.append)
    assert not any("re-scoring" in line for line in lines)

"""Reports of real studies: generation table, top configurations, Fig. 2, HTML, artifacts, note."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta
from optuna_dashboard import get_note
from product_studies import BLOCKS, PER_GENERATION, CheapRetrainer, cheap_objective, make_study

from optuna_biotune.biotune import final, report
from optuna_biotune.biotune.genome import gene_names
from optuna_biotune.engine.seeds import seed_list


def test_generation_table_matches_trials(sqlite_url: str, study_name: str) -> None:
    study = make_study(sqlite_url, study_name, n_trials=3 * PER_GENERATION)
    rows = report.generation_table(study)
    assert [r["generation"] for r in rows] == [0, 1, 2]
    assert all(r["evaluations"] == PER_GENERATION for r in rows)
    values = [t.value for t in study.trials]
    for r in rows:
        gen_values = values[
            r["generation"] * PER_GENERATION : (r["generation"] + 1) * PER_GENERATION
        ]
        assert r["best"] == pytest.approx(max(gen_values))
        assert r["mean"] == pytest.approx(np.mean(gen_values))
    so_far = [r["best_so_far"] for r in rows]
    assert so_far == sorted(so_far)
    assert so_far[-1] == pytest.approx(study.best_value)


def test_top_configurations_are_distinct_and_sorted(sqlite_url: str, study_name: str) -> None:
    study = make_study(sqlite_url, study_name, n_trials=8)
    best = study.best_trial
    study.enqueue_trial(best.params)  # the same configuration evaluated again
    study.optimize(cheap_objective, n_trials=1)
    top = report.top_configurations(study, 20)
    keys = [report.configuration_key(r["mask"], r["lr_weights"]) for r in top]
    assert len(keys) == len(set(keys))
    assert [r["value"] for r in top] == sorted((r["value"] for r in top), reverse=True)
    assert top[0]["trial"] == best.number  # the earlier of two equal configurations
    assert len(report.top_configurations(study, 2)) == 2


def test_trial_record_decodes_genes_without_user_attrs(sqlite_url: str, study_name: str) -> None:
    study = optuna.create_study(study_name=study_name, storage=sqlite_url, direction="maximize")
    params = dict(zip(gene_names(BLOCKS), [0.9, 0.2, 0.7, 0.1, 0.5, 0.4], strict=True))
    study.enqueue_trial(params)
    study.optimize(lambda t: sum(t.suggest_float(n, 0, 1) for n in gene_names(BLOCKS)), n_trials=1)
    record = report.trial_record(study.trials[0])
    assert record["blocks"] == BLOCKS
    assert record["mask"] == [True, False, True, False, True]
    assert record["lr_weights"][0] == pytest.approx(10 ** (2 * (0.9 - 0.5)))
    assert record["lr_weights"][1] == 0.0


def test_fig2_grid_clips_weights_and_marks_frozen_blocks() -> None:
    confs = [
        {"blocks": ["a", "b", "c"], "mask": [True, False, True], "lr_weights": [0.05, 0, 20]},
        {"blocks": ["a", "b", "c"], "mask": [False, True, True], "lr_weights": [0, 1.0, 3.0]},
    ]
    grid = report.fig2_grid(confs)
    assert grid.shape == (3, 2)
    assert grid[0, 0] == 0.1 and grid[2, 0] == 10.0 and grid[1, 1] == 1.0
    assert math.isnan(grid[1, 0]) and math.isnan(grid[0, 1])
    with pytest.raises(ValueError, match="same blocks"):
        report.fig2_grid([confs[0], {**confs[1], "blocks": ["x", "y", "z"]}])
    with pytest.raises(ValueError, match="at least one"):
        report.fig2_grid([])


def test_write_report_files_artifacts_and_note(
    storage_url: str, study_name: str, tmp_path: Path
) -> None:
    study = make_study(storage_url, study_name, n_trials=10)
    store = FileSystemArtifactStore(str(tmp_path / "artifacts"))
    (tmp_path / "artifacts").mkdir()
    out = report.write_report(study, out_dir=tmp_path / "r", artifact_store=store, top_k=4)
    png = Path(out["fig2.png"]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    page = Path(out["report.html"]).read_text()
    assert "data:image/png;base64," in page and f"#{study.best_trial.number}" in page
    data = json.loads(Path(out["report.json"]).read_text())
    assert data["best_value"] == pytest.approx(study.best_value)
    assert len(data["top"]) == 4 and [g["generation"] for g in data["generations"]] == [0, 1]
    metas = get_all_artifact_meta(study)
    assert sorted(m.filename for m in metas) == sorted(out["artifacts"])
    note = get_note(study)
    assert (
        "BioTune" in note
        and f"/artifacts/{study._study_id}/{out['artifacts']['fig2.png']}" in note
    )

    # A second report rewrites the same artifacts instead of piling up new ones.
    before = Path(tmp_path / "artifacts" / out["artifacts"]["report.json"]).read_text()
    study.set_user_attr("biotune:spec", {"dataset": "renamed", "model": "pretend"})
    again = report.write_report(study, out_dir=tmp_path / "r", artifact_store=store, top_k=4)
    assert again["artifacts"] == out["artifacts"]
    assert len(get_all_artifact_meta(study)) == len(out["artifacts"])
    after = Path(tmp_path / "artifacts" / out["artifacts"]["report.json"]).read_text()
    assert after != before and '"dataset": "renamed"' in after


def test_final_retrains_top_k_and_ft_once(sqlite_url: str, study_name: str) -> None:
    study = make_study(sqlite_url, study_name, n_trials=10)
    retrainer = CheapRetrainer()
    result = final.run_final(study, objective=retrainer, top_k=3)
    assert len(retrainer.calls) == 4  # three configurations and FT
    assert retrainer.calls[-1][0] == (True,) * len(BLOCKS)
    rows = result["configurations"]
    assert [r["trial"] for r in rows] == [c["trial"] for c in report.top_configurations(study, 3)]
    for r in rows:
        mean, sem = np.mean(r["test"]), np.std(r["test"], ddof=1) / math.sqrt(3)
        assert r["mean"] == pytest.approx(mean) and r["sem"] == pytest.approx(sem)
    assert result["biotune_test_accuracy"] == pytest.approx(rows[0]["mean"])
    assert result["biotune_test_accuracy_stderr"] == pytest.approx(rows[0]["sem"])
    assert result["best_of_top_k_test_accuracy"] == pytest.approx(max(r["mean"] for r in rows))
    assert result["ft"]["trainable_share"] == 1.0 and "vs FT" in result["summary"]

    # The default seeds are not the search's: no test score shares a fitness run's seed.
    assert result["seeds"] == [1001, 1002, 1003] and result["seeds_shared_with_search"] == []
    assert all(seeds == (1001, 1002, 1003) for _, seeds in retrainer.calls)
    assert not set(result["seeds"]) & set(seed_list(3))

    # Repeating (in a new process's view of the study) recomputes nothing.
    reloaded = optuna.load_study(study_name=study_name, storage=sqlite_url)
    again = final.run_final(reloaded, objective=retrainer, top_k=3)
    assert len(retrainer.calls) == 4 and again["reused"] == 4
    assert again["configurations"] == rows
    # A larger top-k reuses what is stored; other seeds are new work.
    final.run_final(reloaded, objective=retrainer, top_k=4)
    assert len(retrainer.calls) == 5
    assert reloaded.user_attrs[report.FINAL_ATTR]["top_k"] == 4
    lines: list[str] = []
    paper = final.run_final(
        reloaded, objective=retrainer, top_k=1, seeds=[684, 559, 629], log=lines.append
    )
    assert len(retrainer.calls) == 7 and paper["seeds_shared_with_search"] == [684, 559]
    assert any("[684, 559] also trained the search" in line for line in lines)


class FavoursSecondOnTest(CheapRetrainer):
    """Test accuracy 0.99 for one configuration (the second by validation), 0.7 for the rest."""

    def __init__(self, favoured: str) -> None:
        super().__init__()
        self.favoured = favoured

    def retrain_and_test(self, mask, weights, *, seeds):
        self.calls.append((tuple(bool(m) for m in mask), tuple(seeds)))
        hit = report.configuration_key(mask, weights) == self.favoured
        return [(0.99 if hit else 0.7) + 0.001 * i for i in range(len(seeds))]


def test_the_headline_is_first_by_validation_even_when_another_is_best_on_test(
    storage_url: str, study_name: str, tmp_path: Path
) -> None:
    study = make_study(storage_url, study_name, n_trials=10)
    top = report.top_configurations(study, 3)
    assert top[0]["value"] >= top[1]["value"]
    second = report.configuration_key(top[1]["mask"], top[1]["lr_weights"])
    result = final.run_final(study, objective=FavoursSecondOnTest(second), top_k=3)

    # The headline is the first by validation; the test set only measures it.
    assert result["top1"]["trial"] == top[0]["trial"]
    assert result["biotune_test_accuracy"] == pytest.approx(0.701)
    headline, paper = result["summary"].splitlines()
    assert headline.startswith("BioTune test accuracy 0.7010 ± 0.0006")
    assert f"trial #{top[0]['trial']}, first by validation" in headline
    # The paper's best of the top-k, picked on the test set, is a second labelled figure.
    assert result["best"]["trial"] == top[1]["trial"]
    assert result["best_of_top_k_test_accuracy"] == pytest.approx(0.991)
    assert paper.startswith("best of the top 3 on the test set (the paper's protocol")
    assert f"0.9910 ± 0.0006 (trial #{top[1]['trial']})" in paper

    # The report and the study note lead with the same configuration and label the other.
    store = FileSystemArtifactStore(str(tmp_path / "artifacts"))
    (tmp_path / "artifacts").mkdir()
    out = report.write_report(study, out_dir=tmp_path / "r", artifact_store=store, top_k=3)
    note = get_note(study)
    assert note.index(f"**{headline}**") < note.index(paper) < note.index("### Generations")
    assert f"| #{top[0]['trial']} |" in note and "headline: first by validation |" in note
    assert "best of top 3 on test (paper's pick) |" in note
    assert f"Configuration ranked first by validation (trial #{top[0]['trial']}" in note
    page = Path(out["report.html"]).read_text()
    assert page.index(f"<b>{headline}</b>") < page.index("<table>")
    data = json.loads(Path(out["report.json"]).read_text())
    assert data["final"]["biotune_test_accuracy"] == pytest.approx(0.701)


@pytest.mark.parametrize(("top_k", "seeds", "match"), [(0, [1], "top_k"), (2, [], "seeds")])
def test_final_rejects_bad_budgets(
    sqlite_url: str, study_name: str, top_k: int, seeds: list[int], match: str
) -> None:
    from optuna_biotune.errors import UsageError

    study = make_study(sqlite_url, study_name, n_trials=2)
    with pytest.raises(UsageError, match=match):
        final.run_final(study, objective=CheapRetrainer(), top_k=top_k, seeds=seeds)


def test_final_on_an_empty_study_says_run_search(sqlite_url: str, study_name: str) -> None:
    from optuna_biotune.errors import UsageError

    study = optuna.create_study(study_name=study_name, storage=sqlite_url)
    with pytest.raises(UsageError, match="run `search` first"):
        final.run_final(study, objective=CheapRetrainer(), top_k=2, seeds=[1])

"""Reports of a BioTune study: tables, the paper's Fig. 2, an HTML page, dashboard artifacts.

Everything is read from the study alone (trial params and the user attrs the objective writes,
CONTRIBUTING.md), so a report can be made at any time, by any process, during or after a search:

- per generation: evaluations, best and mean fitness, best so far, mean trainable share;
- the best configurations over all generations (deduplicated): trained-block mask, learning-rate
  weights, trainable share, per-seed validation accuracies;
- the ``final`` test results, led by the configuration ranked first by validation (the paper's
  best of the top-k on the test set, a pick on the test set, labelled beside it);
- the paper's Fig. 2: a blocks x configurations heatmap of the learning-rate weights on a log
  colour scale from 0.1 to 10, frozen blocks marked with a snowflake;
- a self-contained HTML page with the tables and the figures;
- the figures, the page and the results attached to the study as Optuna artifacts, and a study
  note in markdown, so optuna-dashboard shows them.

The figures are drawn by :mod:`~optuna_biotune.biotune.figures`, the page and the note
rendered by :mod:`~optuna_biotune.biotune.render`. No torch here: matplotlib is imported when a
figure is drawn.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from optuna_biotune.biotune.attrs import (
    FINAL_ATTR,
    OBJECTIVE_SPEC_ATTR,
    REPORT_ARTIFACTS_ATTR,
    RESCORED_PREFIX,
)
from optuna_biotune.biotune.fidelity import is_full, only_seeds_missing
from optuna_biotune.biotune.figures import fig2_grid, plot_fig2, plot_generations
from optuna_biotune.biotune.genome import IMPORTANCE_PREFIX, THRESHOLD_PARAM, decode
from optuna_biotune.biotune.render import final_rows, fmt, render_html, render_note
from optuna_biotune.evolution import trial_generation
from optuna_biotune.runtime.storage import json_default

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts import FileSystemArtifactStore


# -- reading trials -----------------------------------------------------------------------


def _blocks_of(trial: optuna.trial.FrozenTrial) -> list[str]:
    blocks = trial.user_attrs.get("blocks")
    if isinstance(blocks, list) and blocks:
        return [str(b) for b in blocks]
    return [k[len(IMPORTANCE_PREFIX) :] for k in trial.params if k.startswith(IMPORTANCE_PREFIX)]


def trial_record(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """What people want to see of one finished trial, as plain JSON-able data.

    Uses the objective's user attrs (``mask``, ``lr_weights``, ...) and falls back to decoding
    the genes (``importance:<block>``, ``threshold``) for trials that lack them.
    """
    blocks = _blocks_of(trial)
    mask = trial.user_attrs.get("mask")
    weights = trial.user_attrs.get("lr_weights")
    if (mask is None or weights is None) and blocks and THRESHOLD_PARAM in trial.params:
        genes = [trial.params.get(f"{IMPORTANCE_PREFIX}{b}", 0.0) for b in blocks]
        m, w = decode(genes, trial.params[THRESHOLD_PARAM])
        mask, weights = m.tolist(), w.tolist()
    return {
        "trial": trial.number,
        "generation": trial_generation(trial),
        "value": trial.value,
        "state": trial.state.name,
        "blocks": blocks,
        "mask": [bool(x) for x in (mask or [])],
        "lr_weights": [float(x) for x in (weights or [])],
        "trainable_share": trial.user_attrs.get("trainable_share"),
        "trainable_params": trial.user_attrs.get("trainable_params"),
        "seed_accuracies": trial.user_attrs.get("seed_accuracies"),
        "epochs": trial.user_attrs.get("epochs"),
        "seconds": trial.user_attrs.get("seconds"),
        "params": dict(trial.params),
    }


def _complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]


def _value(trial: optuna.trial.FrozenTrial) -> float:
    """The value of a complete trial (single-objective: never None)."""
    return cast(float, trial.value)


def _maximize(study: optuna.Study) -> bool:
    from optuna.study import StudyDirection

    return study.direction == StudyDirection.MAXIMIZE


def configuration_key(mask: Sequence[bool], weights: Sequence[float]) -> str:
    """A key that is equal for equal configurations (mask and weights to 4 significant digits)."""
    parts = [f"{float(w):.4g}" if m else "frozen" for m, w in zip(mask, weights, strict=True)]
    return "|".join(parts)


def rescored(study: optuna.Study) -> dict[int, dict[str, Any]]:
    """The one-seed values ``final`` re-scored at full fidelity, by trial number
    (study user attrs ``biotune:rescored:<trial>``)."""
    return {
        int(key[len(RESCORED_PREFIX) :]): value
        for key, value in study.user_attrs.items()
        if key.startswith(RESCORED_PREFIX) and isinstance(value, dict)
    }


def top_configurations(study: optuna.Study, k: int) -> list[dict[str, Any]]:
    """The ``k`` best distinct configurations over all generations (best first), each evaluated
    at full fidelity.

    Two trials with the same mask and weights (an elite re-evaluated on another fold) count once,
    with the better fitness. A value below full fidelity (a cut evaluation: fewer seeds, or a
    seed stopped early; :func:`.fidelity.is_full`) is skipped unless ``final`` re-scored it
    (:func:`rescored`: its remaining seeds trained, the record says ``rescored``): it is the mean
    of what it measured, not comparable with full values. ``final`` re-scores the one-seed
    values that could enter the top-k first (:func:`rescore_candidates`).
    """
    if k < 1:
        raise ValueError(f"`k` must be >= 1, got {k}.")
    sign = -1.0 if _maximize(study) else 1.0
    extra = rescored(study)

    def value(t: optuna.trial.FrozenTrial) -> float:
        return float(extra[t.number]["value"]) if t.number in extra else _value(t)

    def ranks(t: optuna.trial.FrozenTrial, record: dict[str, Any]) -> bool:
        return bool(record["mask"]) and (t.number in extra or is_full(t.user_attrs))

    trials = sorted(_complete(study), key=lambda t: (sign * value(t), t.number))
    out: list[dict[str, Any]] = []
    for trial, record, _ in _distinct(trials, ranks):
        if trial.number in extra:
            again = extra[trial.number]
            record |= {
                "value": value(trial),
                "seed_accuracies": again["seed_accuracies"],
                "epochs": again["epochs"],
                "rescored": True,
            }
        out.append(record)
        if len(out) == k:
            break
    return out


def rescore_candidates(study: optuna.Study, k: int) -> list[optuna.trial.FrozenTrial]:
    """The one-seed values ``final`` re-scores at full fidelity before it ranks: the ``k`` best
    distinct configurations whose value is below full fidelity only because seeds are missing
    (every seed it trained ended by its early stop or the epoch limit: a first seed that was
    not promoted, :meth:`.rungs.Rungs.promote`) and is better than the ``k``-th best of the
    search's own full values (any, when it has fewer than ``k``), best first.

    Such a value could belong in the top-k, and only its missing seeds can say: a first seed is
    one draw where a full value is a mean, so it is re-scored, not compared. A configuration
    also evaluated in full is not re-scored. The list depends on the search's trials alone (not
    on earlier re-scores), so a repeated ``final`` re-scores nothing new.
    """
    if k < 1:
        raise ValueError(f"`k` must be >= 1, got {k}.")
    sign = -1.0 if _maximize(study) else 1.0
    ranked = sorted(_complete(study), key=lambda t: (sign * _value(t), t.number))
    full = [
        (t, key)
        for t, _, key in _distinct(ranked, lambda t, r: any(r["mask"]) and is_full(t.user_attrs))
    ]
    bar = sign * _value(full[k - 1][0]) if len(full) >= k else float("inf")
    out: list[optuna.trial.FrozenTrial] = []
    partial = _distinct(
        ranked,
        lambda t, r: any(r["mask"]) and only_seeds_missing(t.user_attrs),
        seen={key for _, key in full},
    )
    for trial, _, _ in partial:
        if sign * _value(trial) >= bar or len(out) == k:
            break
        out.append(trial)
    return out


def _distinct(
    trials: Sequence[optuna.trial.FrozenTrial],
    accept: Callable[[optuna.trial.FrozenTrial, dict[str, Any]], bool],
    *,
    seen: set[str] | None = None,
) -> Iterator[tuple[optuna.trial.FrozenTrial, dict[str, Any], str]]:
    """The trials ``accept`` keeps (given the trial and its :func:`trial_record`), in the order
    given, the first of each configuration only (:func:`configuration_key`; keys in ``seen``
    count as met), each with its record and key."""
    seen = set() if seen is None else set(seen)
    for trial in trials:
        record = trial_record(trial)
        if not accept(trial, record):
            continue
        key = configuration_key(record["mask"], record["lr_weights"])
        if key in seen:
            continue
        seen.add(key)
        yield trial, record, key


def generation_table(study: optuna.Study) -> list[dict[str, Any]]:
    """Per generation: evaluations, best and mean fitness, best so far, mean trainable share."""
    by_gen: dict[int, list[optuna.trial.FrozenTrial]] = {}
    for trial in _complete(study):
        by_gen.setdefault(trial_generation(trial), []).append(trial)
    better = max if _maximize(study) else min
    rows: list[dict[str, Any]] = []
    best_so_far: float | None = None
    for gen in sorted(by_gen):
        values = [float(_value(t)) for t in by_gen[gen]]
        shares = [
            float(t.user_attrs["trainable_share"])
            for t in by_gen[gen]
            if isinstance(t.user_attrs.get("trainable_share"), int | float)
        ]
        best = better(values)
        best_so_far = best if best_so_far is None else better(best_so_far, best)
        rows.append(
            {
                "generation": gen,
                "evaluations": len(values),
                "best": best,
                "mean": float(np.mean(values)),
                "best_so_far": best_so_far,
                "mean_trainable_share": float(np.mean(shares)) if shares else None,
            }
        )
    return rows


def best_summary(study: optuna.Study) -> dict[str, Any]:
    """``best_value`` and ``best_configuration`` of the study (None before any completes)."""
    top = top_configurations(study, 1) if _complete(study) else []
    if not top:
        return {"best_value": None, "best_configuration": None}
    best = top[0]
    return {
        "best_value": best["value"],
        "best_configuration": {
            k: best[k]
            for k in (
                "trial",
                "generation",
                "blocks",
                "mask",
                "lr_weights",
                "trainable_share",
                "seed_accuracies",
            )
        },
    }


# -- the report ---------------------------------------------------------------------------


def build_report(study: optuna.Study, *, top_k: int = 10) -> dict[str, Any]:
    """The report's data: generations, top configurations, final results (JSON-able)."""
    spec = study.user_attrs.get(OBJECTIVE_SPEC_ATTR) or {}
    final = study.user_attrs.get(FINAL_ATTR)
    final_by_trial = {r.get("trial"): r for r in final_rows(final)}
    top = top_configurations(study, top_k) if _complete(study) else []
    for record in top:
        record["label"] = f"#{record['trial']}\n{fmt(record['value'], 3)}"
        test = final_by_trial.get(record["trial"])
        if test is not None:
            record["test_mean"] = test.get("mean")
            record["test_sem"] = test.get("sem")
    return {
        "study": study.study_name,
        "direction": "maximize" if _maximize(study) else "minimize",
        "dataset": spec.get("dataset"),
        "model": spec.get("model"),
        "spec": spec,
        "trials": len(study.trials),
        "completed": len(_complete(study)),
        "generations": generation_table(study),
        "top": top,
        "final": final if isinstance(final, dict) else None,
        **best_summary(study),
    }


def attach_artifacts(
    study: optuna.Study, files: dict[str, Path], artifact_store: FileSystemArtifactStore
) -> dict[str, str]:
    """Upload ``files`` as study artifacts; a later report rewrites the same artifacts.

    The first report uploads each file (``optuna.artifacts.upload_artifact``); later reports
    write the new content under the same artifact ids, so the dashboard keeps one copy of each
    and links in the study note stay valid.

    Returns:
        Artifact name -> artifact id.
    """
    from optuna.artifacts import upload_artifact

    live = study._storage.get_study_system_attrs(study._study_id)
    old = study.user_attrs.get(REPORT_ARTIFACTS_ATTR) or {}
    mimetypes = {".png": "image/png", ".html": "text/html", ".json": "application/json"}
    ids: dict[str, str] = {}
    for name, path in files.items():
        previous = old.get(name)
        if previous and live.get(f"artifacts:{previous}") not in (None, "null"):
            with open(path, "rb") as body:
                artifact_store.write(previous, body)
            ids[name] = previous
            continue
        ids[name] = upload_artifact(
            artifact_store=artifact_store,
            file_path=str(path),
            study_or_trial=study,
            mimetype=mimetypes.get(Path(path).suffix, "application/octet-stream"),
        )
    study.set_user_attr(REPORT_ARTIFACTS_ATTR, {**old, **ids})
    return ids


def write_report(
    study: optuna.Study,
    *,
    out_dir: str | Path,
    artifact_store: FileSystemArtifactStore | None = None,
    top_k: int = 10,
) -> dict[str, Any]:
    """Write ``report.json``, ``fig2.png``, ``generations.png`` and ``report.html`` to ``out_dir``.

    With an ``artifact_store`` the files are attached to the study as artifacts (replacing the
    previous report's) and the study note is rewritten, so optuna-dashboard shows them.

    Returns:
        Paths of the files written, and the artifact ids when attached.
    """
    if top_k < 1:
        raise ValueError(f"`top_k` must be >= 1, got {top_k}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = build_report(study, top_k=top_k)
    figures: dict[str, Path] = {}
    title = f"{data.get('dataset')} / {data.get('model')}: study {data['study']}"
    if data["top"]:
        figures["fig2"] = plot_fig2(data["top"], out / "fig2.png", title=title)
    if data["generations"]:
        figures["generations"] = plot_generations(
            data["generations"], out / "generations.png", title=title
        )
    json_path = out / "report.json"
    json_path.write_text(json.dumps(data, indent=2, default=json_default) + "\n", encoding="utf-8")
    html_path = out / "report.html"
    html_path.write_text(render_html(data, figures), encoding="utf-8")
    files = {"report.html": html_path, "report.json": json_path}
    files.update({f"{k}.png": v for k, v in figures.items()})
    result: dict[str, Any] = {name: str(path) for name, path in files.items()}
    if artifact_store is not None:
        from optuna_dashboard import save_note

        ids = attach_artifacts(study, files, artifact_store)
        urls = {n: f"/artifacts/{study._study_id}/{i}" for n, i in ids.items()}
        save_note(study, render_note(data, urls))
        result["artifacts"] = ids
    return result


__all__ = [
    "FINAL_ATTR",
    "REPORT_ARTIFACTS_ATTR",
    "attach_artifacts",
    "best_summary",
    "build_report",
    "configuration_key",
    "fig2_grid",
    "generation_table",
    "plot_fig2",
    "plot_generations",
    "render_html",
    "render_note",
    "top_configurations",
    "trial_record",
    "write_report",
]

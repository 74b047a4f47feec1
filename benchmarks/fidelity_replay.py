"""Multi-fidelity rules replayed on an exact search's stored curves (design aid, issue 22).

An exact-protocol search (``comparison.py exact``) stores, for each of its evaluations, every
seed's validation accuracy after every epoch (the trial's intermediate values at step
``seed_index * max_epochs + epoch``), its CPU seconds, and the bar it had to beat to change a
decision of the search (:func:`optuna_biotune.biotune.racing.entry_bar`). This script replays
cheaper rules on those curves, in trial order, each rule seeing only what came before:

``one-seed``
    Every evaluation trains its first seed to its early stop; the remaining seeds train only
    when that first seed reaches the evaluation's bar (it could become an elite, replace its
    elite, or beat its parents) or enters the study's top-k so far.
``curve-bar``
    As ``one-seed``, and the first seed stops after any epoch at which its best so far is
    below every earlier full evaluation that ended at or above this evaluation's bar stood
    at the same epoch (minus ``slack``): what every evaluation that cleared the bar had
    reached by then, a point reading of the study's own complete curves (no optimism).
``asha``
    As ``one-seed``, and the first seed stops at a rung (epochs ``rungs``) unless its best so
    far is in the top ``1/eta`` of the first seeds of earlier evaluations at that rung
    (asynchronous successive halving, Li et al. 2020: no evaluation waits for a rung to fill;
    the first ``eta`` evaluations to reach a rung always go on).
``rungs``
    The default's schedule (``optuna_biotune/biotune/rungs.py``): ``asha``'s rungs, and the
    remaining seeds only for a bred candidate whose first seed reaches its bar, or (a fresh
    individual, or no bar) a first seed at least every earlier completed one
    (:meth:`optuna_biotune.biotune.rungs.Rungs.promote` itself).
``rungs-compute``
    As ``rungs``, with the rungs counted in compute instead of epochs: rung ``r`` is read after
    the epoch at which the evaluation has spent what ``r`` epochs of FT on the search's data
    fraction cost (the FT unit's CPU seconds per epoch times the data fraction), and at least
    ``r`` epochs. An evaluation whose epochs are cheap (a frozen prefix served by the cache)
    is read later, so a slow starter that costs little is not stopped where it costs little
    (the question the rung at epoch 2 left open: it stopped the exact search's top-1 in
    mnist5k s0 and mnist-shift s0). An epoch's cost is the evaluation's own CPU seconds per
    epoch in the exact run.
``rungs-flops``
    As ``rungs-compute``, with an epoch's cost relative to FT's predicted from the mask alone
    (deterministic, as a live search needs): the FLOP split of the frozen-prefix cache
    (``optuna_biotune/engine/cache.py``), each block's forward FLOPs ``F`` on one image counted
    by ``torch.utils.flop_counter``; from the first trained block on, forward ``F``, input
    gradient ``F`` (not for the first trained block), weight gradient ``F`` (trained blocks),
    and validation's forward ``F`` times the validation-to-training size ratio; the prefix
    before it is served by the cache. ``--flops-scale`` multiplies the ratio (measured per
    epoch CPU against this prediction, over the exact runs' evaluations: 0.7-0.9 at the median).

For each rule: the epochs and CPU seconds it keeps (CPU per epoch taken from each evaluation's
own exact run, so a frozen prefix stays cheap), in the search's unit (full-data FT runs), and
the configuration it would rank first by validation among its full-fidelity evaluations, with
that configuration's exact value beside the exact run's top-1. The candidates are the exact
run's: in a live run a rule changes the values the sampler sees and so the candidates it
breeds, which a replay cannot show; it measures what a rule saves and whether it still finds
the best of the same candidates.

Usage::

    python benchmarks/fidelity_replay.py benchmarks/runs/exact-digits-low-s0.db [...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from optuna_biotune import BioTuneSampler
from optuna_biotune.biotune import racing
from optuna_biotune.biotune.rungs import Rungs

HERE = Path(__file__).resolve().parent


def _curves(t: optuna.trial.FrozenTrial, max_epochs: int) -> list[list[float]]:
    """Per seed, the best validation accuracy so far after each epoch it trained."""
    out = []
    for k, epochs in enumerate(t.user_attrs.get("epochs", [])):
        best, curve = float("-inf"), []
        for e in range(1, int(epochs) + 1):
            best = max(best, float(t.intermediate_values[k * max_epochs + e]))
            curve.append(best)
        out.append(curve)
    return out


def _flops_ratios(study: optuna.Study) -> dict[int, float]:
    """Per trial, its mask's predicted cost of an epoch over FT's (``rungs-flops``)."""
    import hard_sets
    from objective_speed import stage_flops

    from optuna_biotune import BioTuneObjective
    from optuna_biotune.biotune import genome

    spec = dict(study.user_attrs["biotune:spec"])
    # A harder set's study stores the folder of the machine it ran on; this machine's own
    # copy is built (or found) by hard_sets.
    if Path(spec["dataset"]).name in hard_sets.SETS:
        spec["dataset"] = hard_sets.resolve(Path(spec["dataset"]).name)
    objective = BioTuneObjective.from_spec(spec)
    train, val = objective.tuner.fold("train", 0), objective.tuner.fold("val", 0)
    objective.tuner.net.eval()
    flops = stage_flops(objective.tuner.chain, train.batch(slice(0, 1))[0])
    share = len(val) / len(train)

    def cost(mask: np.ndarray) -> float:
        trained = np.flatnonzero(mask)
        if not len(trained):
            return 0.0
        p = int(trained[0])
        return sum(
            f * (1 + (i > p) + bool(mask[i]) + share) for i, f in enumerate(flops) if i >= p
        )

    ft = cost(np.ones(len(flops), dtype=bool))
    out = {}
    for t in study.trials:
        mask = np.array(genome.decode_params(t.params, objective.blocks)[0], dtype=bool)
        mask[objective.tuner.head_index] = True  # a valid individual always trains its head
        out[t.number] = cost(mask) / ft
    return out


def replay(
    study: optuna.Study,
    *,
    rule: str,
    top_k: int = 1,
    rungs: tuple[int, ...] = (1, 3),
    eta: int = 3,
    slack: float = 0.0,
    flops_scale: float = 1.0,
) -> dict[str, Any]:
    """Replay ``rule`` (``exact``, ``one-seed``, ``curve-bar``, ``asha``, ``rungs`` or
    ``rungs-compute``, ``rungs-flops``) on ``study``'s curves."""
    spec = study.user_attrs["biotune:spec"]
    max_epochs = int(spec["max_epochs"])
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    at_rung: dict[int, list[float]] = {r: [] for r in rungs}
    full: dict[int, float] = {}  # trial -> its value, for evaluations kept at full fidelity
    firsts: dict[int, list[float]] = {}  # trial -> its first seed's curve, full ones only
    completed: list[list[float]] = []  # first seeds that trained to their end
    kept_epochs = total_epochs = 0
    kept_cpu = total_cpu = 0.0
    chunks = study.user_attrs.get("search_cost:chunks", [])
    ft = chunks[-1]["ft"] if chunks else {}
    # FT's CPU seconds per epoch on the search's data fraction (rungs-compute's yardstick).
    ft_epoch = (
        float(ft.get("cpu", "nan"))
        / float(ft.get("epochs", 1))
        * float(spec.get("data_fraction", 1.0))
    )
    relative = _flops_ratios(study) if rule == "rungs-flops" else {}
    for t in trials:
        curves = _curves(t, max_epochs)
        epochs = [len(c) for c in curves]
        cpu = float(t.user_attrs.get("search_cost:cpu", 0.0))
        per_epoch = cpu / max(1, sum(epochs))
        total_epochs += sum(epochs)
        total_cpu += cpu
        if not curves:  # invalid: nothing trained, its 0 is its true value
            full[t.number] = float(t.value)
            continue
        if rule == "exact":
            kept = sum(epochs)
            full[t.number] = float(t.value)
            firsts[t.number] = curves[0]
        else:
            first = curves[0]
            stop = len(first)
            if rule in ("asha", "rungs", "rungs-compute", "rungs-flops"):
                cost = 1.0  # an epoch's cost relative to an epoch of FT
                if rule == "rungs-compute":
                    cost = per_epoch / ft_epoch
                elif rule == "rungs-flops":
                    cost = relative[t.number] * flops_scale
                for r in rungs:
                    at = max(r, int(r / max(cost, 1e-9)))
                    if at >= len(first):
                        break
                    seen = at_rung[r]
                    value = first[at - 1]
                    seen.append(value)
                    if len(seen) > eta and value < np.quantile(seen[:-1], 1 - 1 / eta):
                        stop = at
                        break
            if rule == "curve-bar":
                bar = racing.entry_bar(t, study)
                cleared = [
                    firsts[n] for n, v in full.items() if n in firsts and bar and v >= bar.value
                ]
                if cleared:
                    for e in range(1, len(first)):
                        need = min(c[min(e, len(c)) - 1] for c in cleared) - slack
                        if first[e - 1] < need:
                            stop = e
                            break
            kept = stop
            if stop == len(first):  # the first seed finished: does it go on?
                bar = racing.entry_bar(t, study)
                ranked = sorted(full.values(), reverse=True)
                in_top = len(ranked) < top_k or first[-1] > ranked[top_k - 1]
                done = [f[-1] for f in completed]
                completed.append(first)
                if rule.startswith("rungs"):  # the default's own promotion rule
                    schedule = Rungs(at_rung={}, completed=done)
                    go = schedule.promote(first[-1], bar, role=racing.slot_role(t))
                else:
                    go = (bar is None or first[-1] >= bar.value) or in_top
                if go:
                    kept = sum(epochs)
                    full[t.number] = float(t.value)
                    firsts[t.number] = first
        kept_epochs += kept
        kept_cpu += kept * per_epoch
    exact_top = max(
        (t for t in trials if t.user_attrs.get("epochs")), key=lambda t: (t.value, -t.number)
    )
    mine = max(full, key=lambda n: (full[n], -n))
    unit = float(ft["cpu"]) if ft else float("nan")
    return {
        "rule": rule,
        "evaluations": len(trials),
        "full_fidelity": len(full),
        "epochs_kept": kept_epochs,
        "epochs_share": round(kept_epochs / max(1, total_epochs), 3),
        "search_ft_runs": round(kept_cpu / unit, 2),
        "exact_search_ft_runs": round(total_cpu / unit, 2),
        "top1": mine,
        "top1_exact_value": round(full[mine], 4),
        "exact_top1": exact_top.number,
        "exact_top1_value": round(float(exact_top.value), 4),
        "same_top1": mine == exact_top.number,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dbs", nargs="+")
    p.add_argument("--eta", type=int, default=3)
    p.add_argument("--slack", type=float, default=0.0, help="curve-bar's tolerance")
    p.add_argument("--population", type=int, default=10)
    p.add_argument("--elites", type=int, default=3)
    p.add_argument("--rungs", type=int, nargs="+", default=[1, 3])
    p.add_argument("--rules", nargs="+", default=["exact", "one-seed", "curve-bar", "asha"])
    p.add_argument("--flops-scale", type=float, default=1.0, help="rungs-flops' scale")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    for db in args.dbs:
        name = Path(db).stem
        study = optuna.load_study(  # the sampler gives racing its n_elites (the bars)
            study_name=name,
            storage=f"sqlite:///{db}",
            sampler=BioTuneSampler(population_size=args.population, n_elites=args.elites),
        )
        for rule in args.rules:
            row = {"study": name, "rungs": args.rungs} | replay(
                study,
                rule=rule,
                rungs=tuple(args.rungs),
                eta=args.eta,
                flops_scale=args.flops_scale,
            )
            if rule == "rungs-flops":
                row["flops_scale"] = args.flops_scale
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        doc = {"command": "python benchmarks/fidelity_replay.py " + " ".join(sys.argv[1:])}
        Path(args.out).write_text(json.dumps(doc | {"rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()

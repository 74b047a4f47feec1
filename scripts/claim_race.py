"""Stress run of the plain-URL claim protocol: the three-process race, many times.

Each repetition creates a new study and starts three worker processes that share it through a
plain storage URL (``optuna.create_study(storage="sqlite:///...")``, the README's Python path:
claims written, then read back), the workers of the test suite's two races:

- ``evoprune``: ``tests/evoprune/test_evoprune_sampler.py``'s (EvoPruneSampler, population 6,
  two slots per generation after the first, so generations turn over while claims are in flight);
- ``biotune``: ``tests/evolution/test_sampler_parallel.py``'s (BioTuneSampler, population 10).

It counts double fills (two COMPLETE trials with the same generation and slot), workers that
did not exit 0 and trials that did not complete. Not part of the test suite (minutes to
hours); its command and figures are in CONTRIBUTING.md.

    python scripts/claim_race.py --storage sqlite --repetitions 200
    python scripts/claim_race.py --storage "$(bash .ci/postgres.sh | tail -n 1)" --repetitions 200
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
from optuna.trial import TrialState

from optuna_biotune.evolution.layout import Layout

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))


def _commands(sampler: str, url: str, name: str, folder: Path) -> list[list[str]]:
    """The three workers' command lines (the test suite's own workers)."""
    if sampler == "biotune":
        script = str(TESTS / "test_sampler_parallel.py")
        return [[sys.executable, script, url, name, "12", str(w), "optuna"] for w in range(3)]
    from test_evoprune_sampler import _worker

    script = _worker(folder, url, name)
    return [[sys.executable, str(script), "10"] for _ in range(3)]


def race(sampler: str, url: str, folder: Path) -> dict[str, int]:
    """One repetition: three workers on a new study; what went wrong."""
    name = f"race-{uuid.uuid4().hex[:10]}"
    direction = "maximize" if sampler == "evoprune" else "minimize"
    optuna.create_study(study_name=name, storage=url, direction=direction)
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for cmd in _commands(sampler, url, name, folder)
    ]
    failed = 0
    for p in procs:
        _, err = p.communicate(timeout=600)
        if p.returncode != 0:
            failed += 1
            print(err.decode(errors="replace")[-1500:], file=sys.stderr)
    study = optuna.load_study(study_name=name, storage=url)
    layout = Layout("EvoPruneSampler" if sampler == "evoprune" else "BioTuneSampler")
    places = [
        (c["generation"], c["slot"])
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if (c := layout.claim(t.system_attrs)) is not None
    ]
    doubles = sum(n - 1 for n in collections.Counter(places).values() if n > 1)
    unfinished = sum(t.state != TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
    return {"double_fills": doubles, "failed_workers": failed, "unfinished_trials": unfinished}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="sqlite", help="'sqlite' (a new file each) or a URL")
    parser.add_argument("--repetitions", type=int, default=200)
    parser.add_argument("--sampler", choices=("evoprune", "biotune"), default="evoprune")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    totals: collections.Counter[str] = collections.Counter()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i in range(args.repetitions):
            url = args.storage
            if url == "sqlite":
                url = f"sqlite:///{folder / f'race-{i}.db'}"
            found = race(args.sampler, url, folder)
            totals.update(found)
            print(f"{i + 1}/{args.repetitions} {json.dumps(found)}", file=sys.stderr, flush=True)
    summary = {
        "sampler": args.sampler,
        "storage": args.storage.split("@")[-1],
        "repetitions": args.repetitions,
        **{k: totals[k] for k in ("double_fills", "failed_workers", "unfinished_trials")},
        "seconds": round(time.perf_counter() - started),
    }
    print(json.dumps(summary))
    return 0 if not any(totals.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

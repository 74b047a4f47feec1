"""The report's page and study note: the HTML page (figures embedded) and the markdown note
optuna-dashboard shows, both from the data :func:`optuna_biotune.biotune.report.build_report`
reads from a study. No torch, no matplotlib."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optuna_biotune.biotune.figures import SNOWFLAKE

__all__ = ["final_rows", "fmt", "render_html", "render_note"]


def fmt(value: Any, digits: int = 4) -> str:
    """``value`` for a table: floats to ``digits`` decimals, ``-`` for none or NaN."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{100 * float(value):.1f} %"


def _weights_text(record: dict[str, Any]) -> str:
    return ", ".join(
        f"{b}: {'frozen' if not m else f'{w:.3g}'}"
        for b, m, w in zip(record["blocks"], record["mask"], record["lr_weights"], strict=True)
    )


def final_rows(final: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The retrained configurations of a ``final`` result (``[]`` without one)."""
    if not isinstance(final, dict):
        return []
    return list(final.get("configurations", []))


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _final_roles(rows: Sequence[dict[str, Any]]) -> dict[int, str]:
    """Row index -> what the row is: the headline (first by validation), the paper's pick."""
    if not rows:
        return {}
    best = max(range(len(rows)), key=lambda i: (float(rows[i].get("mean") or 0.0), -i))
    roles = {0: "headline: first by validation"}
    if best == 0:
        roles[0] += "; also best on test"
    else:
        roles[best] = f"best of top {len(rows)} on test (paper's pick)"
    return roles


def _final_table_rows(final: dict[str, Any] | None) -> list[list[str]]:
    rows = []
    configurations = final_rows(final)
    roles = _final_roles(configurations)
    for i, r in enumerate(configurations):
        rows.append(
            [
                f"#{r.get('trial')}",
                fmt(r.get("validation")),
                f"{fmt(r.get('mean'))} ± {fmt(r.get('sem'))}",
                _pct(r.get("trainable_share")),
                roles.get(i, ""),
            ]
        )
    if isinstance(final, dict) and isinstance(final.get("ft"), dict):
        ft = final["ft"]
        rows.append(
            [
                "FT (all blocks, weight 1)",
                "-",
                f"{fmt(ft.get('mean'))} ± {fmt(ft.get('sem'))}",
                _pct(ft.get("trainable_share")),
                "reference",
            ]
        )
    return rows


_FINAL_HEADER = ["configuration", "validation", "test mean ± s.e.", "trainable share", "role"]


def _final_seeds_text(final: dict[str, Any]) -> str:
    seeds = final.get("seeds") or []
    text = f"Retrained on the full training set with seed(s) {', '.join(map(str, seeds))}"
    shared = final.get("seeds_shared_with_search")
    if shared:
        text += f" ({', '.join(map(str, shared))} also used by the search)"
    return text + "; mean ± standard error over seeds."


def render_html(data: dict[str, Any], figures: dict[str, Path]) -> str:
    """A self-contained HTML page (figures embedded) for ``data`` from :func:`build_report`."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>BioTune report: {html.escape(data['study'])}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:3px 8px;font-size:13px;text-align:right}th{background:#f0f3f7}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>BioTune study <code>{html.escape(data['study'])}</code></h1>",
        f"<p>dataset <b>{html.escape(str(data.get('dataset')))}</b>, model "
        f"<b>{html.escape(str(data.get('model')))}</b>; {data['completed']} completed of "
        f"{data['trials']} trials; best validation fitness {fmt(data.get('best_value'))}.</p>",
    ]
    final = data.get("final")
    if final:
        parts.append("<h2>Test accuracy after retraining on the full training set</h2>")
        lines = str(final.get("summary") or "").splitlines()
        if lines:  # the headline: the configuration ranked first by validation
            parts.append(f"<p><b>{html.escape(lines[0])}</b></p>")
        parts.append(_html_table(_FINAL_HEADER, _final_table_rows(final)))
        parts += [f"<p>{html.escape(line)}</p>" for line in lines[1:]]
        parts.append(f"<p>{html.escape(_final_seeds_text(final))}</p>")
    if "fig2" in figures:
        parts.append("<h2>Fig. 2: learning-rate weights of the best configurations</h2>")
        parts.append(f"<img alt='Fig. 2 heatmap' src='{_png_data_uri(figures['fig2'])}'>")
    if "generations" in figures:
        parts.append("<h2>Fitness per generation</h2>")
        parts.append(
            f"<img alt='fitness per generation' src='{_png_data_uri(figures['generations'])}'>"
        )
    parts.append(
        _html_table(
            ["generation", "evaluations", "best", "mean", "best so far", "mean trainable share"],
            [
                [
                    r["generation"],
                    r["evaluations"],
                    fmt(r["best"]),
                    fmt(r["mean"]),
                    fmt(r["best_so_far"]),
                    _pct(r["mean_trainable_share"]),
                ]
                for r in data["generations"]
            ],
        )
    )
    parts.append("<h2>Best configurations (all generations)</h2>")
    parts.append(
        _html_table(
            ["trial", "generation", "fitness", "trainable share", "per-seed", "LR weights"],
            [
                [
                    f"#{r['trial']}",
                    r["generation"],
                    fmt(r["value"]),
                    _pct(r["trainable_share"]),
                    ", ".join(fmt(a, 3) for a in (r.get("seed_accuracies") or [])),
                    _weights_text(r),
                ]
                for r in data["top"]
            ],
        )
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def render_note(data: dict[str, Any], artifact_urls: dict[str, str]) -> str:
    """The study note (markdown) optuna-dashboard shows on the study page."""
    lines = [
        f"## BioTune: {data.get('dataset')} on {data.get('model')}",
        "",
        f"{data['completed']} completed evaluations of {data['trials']} trials; best validation "
        f"fitness **{fmt(data.get('best_value'))}**.",
        "",
    ]
    final = data.get("final")
    summary = str(final.get("summary") or "").splitlines() if final else []
    if summary:  # the headline: the configuration ranked first by validation, on the test set
        lines += [f"**{summary[0]}**", ""]
    best = data.get("best_configuration")
    if best:
        lines += [
            f"Configuration ranked first by validation (trial #{best['trial']}, generation "
            f"{best['generation']}, trainable share {_pct(best.get('trainable_share'))}):",
            "",
            "| block | LR weight |",
            "|---|---|",
        ]
        for b, m, w in zip(best["blocks"], best["mask"], best["lr_weights"], strict=True):
            lines.append(f"| {b} | {f'{w:.3g}' if m else SNOWFLAKE + ' frozen'} |")
        lines.append("")
    if final:
        lines += ["### Test accuracy (retrained on the full training set)", ""]
        lines += ["| " + " | ".join(_FINAL_HEADER) + " |", "|---|---|---|---|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in _final_table_rows(final)]
        lines.append("")
        lines += [*(f"{line}  " for line in summary[1:]), _final_seeds_text(final), ""]
    if data["generations"]:
        lines += [
            "### Generations",
            "",
            "| generation | evaluations | best | mean |",
            "|---|---|---|---|",
        ]
        for r in data["generations"]:
            cells = [r["generation"], r["evaluations"], fmt(r["best"]), fmt(r["mean"])]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        lines.append("")
    if "fig2.png" in artifact_urls:
        lines += [f"![Fig. 2]({artifact_urls['fig2.png']})", ""]
    if artifact_urls:
        lines.append("Artifacts: " + ", ".join(f"[{n}]({u})" for n, u in artifact_urls.items()))
    return "\n".join(lines)

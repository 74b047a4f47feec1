"""The report's figures: the paper's Fig. 2 (blocks x configurations, learning-rate weights,
frozen blocks marked) and fitness per generation (PNG, matplotlib's Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Mark of a frozen block in Fig. 2, the tables and the notes.
SNOWFLAKE = "\u2744"
#: Colour range of Fig. 2's learning-rate weights (BioTune's ``W_b`` in [0.1, 10], eq. 5).
WEIGHT_MIN, WEIGHT_MAX = 0.1, 10.0


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, ax: Any, path: str | Path, title: str) -> Path:
    """Title ``ax``, write ``fig`` as a PNG to ``path`` (folders made) and close it."""
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    _pyplot().close(fig)
    return out


def fig2_grid(configurations: Sequence[dict[str, Any]]) -> np.ndarray:
    """The Fig. 2 matrix: blocks x configurations of LR weights in [0.1, 10], NaN = frozen.

    Raises:
        ValueError: No configuration, or configurations over different blocks.
    """
    if not configurations:
        raise ValueError("`configurations` must hold at least one configuration to plot.")
    blocks = list(configurations[0]["blocks"])
    grid = np.full((len(blocks), len(configurations)), np.nan)
    for j, conf in enumerate(configurations):
        if list(conf["blocks"]) != blocks:
            raise ValueError("`configurations` must all have the same blocks to share a figure.")
        for i, (m, w) in enumerate(zip(conf["mask"], conf["lr_weights"], strict=True)):
            if m:
                grid[i, j] = min(max(float(w), WEIGHT_MIN), WEIGHT_MAX)
    return grid


def plot_fig2(
    configurations: Sequence[dict[str, Any]], path: str | Path, *, title: str = ""
) -> Path:
    """Draw the paper's Fig. 2: blocks x configurations, LR weights on a log scale 0.1-10.

    Args:
        configurations: Records with ``blocks``, ``mask``, ``lr_weights`` and a ``label``.
        path: PNG file to write.
        title: Figure title.

    Returns:
        The path written.
    """
    import matplotlib
    from matplotlib.colors import LogNorm

    plt = _pyplot()

    grid = fig2_grid(configurations)
    blocks = configurations[0]["blocks"]
    n_blocks, n_conf = grid.shape
    width = max(4.5, 1.0 + 0.9 * n_conf)
    height = max(3.0, 1.2 + 0.45 * n_blocks)
    fig, ax = plt.subplots(figsize=(width, height), dpi=120)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#e8eef4")
    image = ax.imshow(
        np.ma.masked_invalid(grid),
        cmap=cmap,
        norm=LogNorm(vmin=WEIGHT_MIN, vmax=WEIGHT_MAX),
        aspect="auto",
        interpolation="nearest",
    )
    for i in range(n_blocks):
        for j in range(n_conf):
            if np.isnan(grid[i, j]):
                ax.text(j, i, SNOWFLAKE, ha="center", va="center", color="#3a6ea5", fontsize=13)
            else:
                dark = grid[i, j] < 1.5
                ax.text(
                    j,
                    i,
                    f"{grid[i, j]:.2g}",
                    ha="center",
                    va="center",
                    color="white" if dark else "black",
                    fontsize=8,
                )
    ax.set_yticks(range(n_blocks), labels=blocks, fontsize=8)
    ax.set_xticks(
        range(n_conf),
        labels=[c.get("label", str(j)) for j, c in enumerate(configurations)],
        fontsize=8,
    )
    ax.set_xlabel("configuration")
    ax.set_ylabel("block")
    bar = fig.colorbar(image, ax=ax, ticks=[0.1, 0.3, 1, 3, 10])
    bar.ax.set_yticklabels(["0.1", "0.3", "1", "3", "10"])
    bar.set_label(f"learning-rate weight ({SNOWFLAKE} frozen)")
    return _save(fig, ax, path, title)


def plot_generations(rows: Sequence[dict[str, Any]], path: str | Path, *, title: str = "") -> Path:
    """Best, mean and best-so-far fitness per generation (PNG)."""
    if not rows:
        raise ValueError("`rows` must hold at least one generation to plot.")
    gens = [r["generation"] for r in rows]
    fig, ax = _pyplot().subplots(figsize=(5.5, 3.4), dpi=120)
    ax.plot(gens, [r["mean"] for r in rows], "o-", label="mean", color="#999999")
    ax.plot(gens, [r["best"] for r in rows], "s-", label="best of generation", color="#3a6ea5")
    ax.plot(gens, [r["best_so_far"] for r in rows], "--", label="best so far", color="#c0392b")
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness (validation accuracy)")
    ax.set_xticks(gens)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, ax, path, title)


# -- the report ---------------------------------------------------------------------------


__all__ = ["SNOWFLAKE", "WEIGHT_MAX", "WEIGHT_MIN", "fig2_grid", "plot_fig2", "plot_generations"]

"""The demo report's plot: the held-out metric per round against the target, as a PNG.

Drawn with matplotlib's Agg canvas directly (no pyplot, no display, no global state), so it
works on a headless machine and from any thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def plot_accuracy(
    accuracy_per_round: Sequence[float],
    target: float,
    path: Path,
    *,
    title: str = "",
    metric: str = "accuracy",
) -> Path:
    """Write a PNG of the metric per round with the target as a dashed line; returns ``path``.

    Args:
        accuracy_per_round: The held-out metric after each round, in round order.
        target: The value the run must reach (drawn as a horizontal line).
        path: Where the PNG goes (its folder must exist).
        title: The plot's title.
        metric: ``accuracy`` (a 0..1 axis) or another metric (perplexity, loss: an axis from 0
            that fits the values).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    rounds = list(range(len(accuracy_per_round)))
    axes.plot(rounds, list(accuracy_per_round), marker="o", label=f"test {metric}")
    axes.axhline(target, color="tab:red", linestyle="--", label=f"target {target:.2f}")
    axes.set_xlabel("round")
    axes.set_ylabel(metric)
    if metric == "accuracy":
        axes.set_ylim(0.0, 1.0)
    else:
        axes.set_ylim(0.0, max([target, *accuracy_per_round]) * 1.1)
    if rounds:
        axes.set_xticks(rounds)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    if title:
        axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path

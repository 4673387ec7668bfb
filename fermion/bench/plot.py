"""Latency-by-percentile charts of load results (matplotlib, imported only when asked for)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fermion.bench.result import LoadResult

INSTALL_HINT = "plotting needs matplotlib: pip install 'fermion[bench]'"


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> Any:
    """matplotlib.pyplot on the Agg backend; PlotUnavailable with the install hint when it is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable(INSTALL_HINT) from exc
    return plt


def _position(pct: float) -> float:
    """Percentiles spread out towards the tail: 0 → 0, 90 → 1, 99 → 2, 99.9 → 3."""
    return -math.log10(1.0 - pct / 100.0)


def plot_latency(results: dict[str, LoadResult], path: Path, title: str = "Latency by percentile") -> Path:
    """One line per result (label → result): latency in ms against the percentile, tail stretched."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    ticks = (0.0, 50.0, 90.0, 99.0, 99.9, 99.99)
    for label, result in results.items():
        points = sorted((float(p), ms) for p, ms in result.percentiles.items() if float(p) < 100.0)
        ax.plot(
            [_position(p) for p, _ in points],
            [ms for _, ms in points],
            marker="o",
            markersize=3,
            label=f"{label}: {result.rps:,.0f} req/s, p99 {result.p99_ms:.1f} ms",
        )
    ax.set_xticks([_position(p) for p in ticks], [f"{p:g}%" for p in ticks])
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path

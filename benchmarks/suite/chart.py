"""The PNG chart of the newest results: requests per second by server, echo and MiniLM side by side.

python -m suite.chart benchmarks/results benchmarks/results/chart.png   (from benchmarks/, with matplotlib)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from suite.report import latest_results


def _bars(ax: Any, record: dict[str, Any], title: str, limit: float | None, limit_label: str) -> None:
    entries = [(e["label"], e["rps"]) for e in record.get("peers", {}).values() if "skipped" not in e]
    labels = [label for label, _ in entries][::-1]
    values = [rps for _, rps in entries][::-1]
    colors = ["#d1495b" if label == "Fermion" else "#8d99ae" for label in labels]
    ax.barh(labels, values, color=colors)
    for y, value in enumerate(values):
        ax.text(value, y, f" {value:,.0f}", va="center", fontsize=8)
    if limit:
        ax.axvline(limit, color="#2e4057", linestyle="--", linewidth=1)
        ax.text(limit, -0.45, f"{limit_label} ", fontsize=8, color="#2e4057", rotation=90, ha="right", va="bottom")
    ax.set_title(title)
    ax.set_xlabel("requests per second (higher is better)")
    ax.margins(x=0.2)


def main(results: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = latest_results(results)
    panels = [b for b in ("echo", "minilm") if b in runs]
    if not panels:
        raise SystemExit("no echo or minilm results to draw")
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 3.8), dpi=120, squeeze=False)
    for ax, bench in zip(axes[0], panels, strict=True):
        record = runs[bench]
        if bench == "echo":
            _bars(ax, record, "echo, 64 connections, server on 1 core", None, "")
        else:
            raw = record.get("raw_model", {}).get("sentences_per_s", {}).get("32")
            _bars(ax, record, "all-MiniLM-L6-v2, 64 connections, 2 cores", raw, "raw model, batch 32")
    machine = next(iter(runs.values()))["machine"]
    fig.suptitle(f"Fermion benchmarks · {machine['cpu']}, {machine['cores']} cores", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

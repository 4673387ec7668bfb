"""The evaluation report of a model version: PNG plots and one self-contained HTML page."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

PLOTS = "plots"


def write_report(folder: Path, manifest: dict[str, Any], version: int) -> list[str]:
    """Write `plots/*.png` and `report.html` into `folder`; return the plot file names."""
    import matplotlib

    matplotlib.use("Agg")
    (folder / PLOTS).mkdir(exist_ok=True)
    made = []
    for name, draw in (
        ("search.png", _search_plot),
        ("confusion.png", _confusion_plot),
        ("importance.png", _importance_plot),
        ("predictions.png", _predictions_plot),
    ):
        if draw(manifest, folder / PLOTS / name):
            made.append(name)
    (folder / "report.html").write_text(render_html(manifest, version, {n: (folder / PLOTS / n).read_bytes() for n in made}))
    return made


def _figure(width: float = 6.0, height: float = 4.0) -> Any:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(width, height), dpi=100)
    return figure, axes


def _save(figure: Any, path: Path) -> bool:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
    return True


def _search_plot(manifest: dict[str, Any], path: Path) -> bool:
    trials = [t for t in manifest["trials"] if t["status"] == "ok" and t["score"] is not None]
    if not trials:
        return False
    metric = manifest["metric"]
    figure, axes = _figure()
    families = sorted({t["family"] for t in trials})
    for family in families:
        mine = [t for t in trials if t["family"] == family]
        axes.scatter([t["finished_at"] for t in mine], [t["score"] for t in mine], label=family, s=18, alpha=0.8)
    best, xs, ys = None, [], []
    for t in trials:
        if best is None or (t["score"] > best if metric["greater_is_better"] else t["score"] < best):
            best = t["score"]
        xs.append(t["finished_at"])
        ys.append(best)
    axes.step(xs, ys, where="post", color="black", linewidth=1, label="best so far")
    axes.set_xlabel("seconds since the start")
    axes.set_ylabel(f"cross-validated {metric['label']}")
    axes.set_title("Search: every trial and the best so far")
    axes.legend(fontsize=8)
    return _save(figure, path)


def _confusion_plot(manifest: dict[str, Any], path: Path) -> bool:
    confusion = (manifest.get("details") or {}).get("confusion")
    if not confusion:
        return False
    labels, matrix = confusion["labels"], confusion["matrix"]
    size = min(10.0, 2.5 + 0.45 * len(labels))
    figure, axes = _figure(size, size * 0.85)
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    axes.set_yticks(range(len(labels)), labels, fontsize=8)
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            axes.text(j, i, str(value), ha="center", va="center", fontsize=8, color="white" if value > peak / 2 else "black")
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    axes.set_title("Confusion matrix (test rows)")
    return _save(figure, path)


def _importance_plot(manifest: dict[str, Any], path: Path) -> bool:
    found = (manifest.get("importance") or [])[:15]
    if not found:
        return False
    figure, axes = _figure(6.5, 1.2 + 0.3 * len(found))
    names = [f["feature"] for f in reversed(found)]
    axes.barh(names, [f["importance"] for f in reversed(found)], xerr=[f["std"] for f in reversed(found)], color="#4c78a8")
    axes.set_xlabel(f"drop in {manifest['metric']['label']} when shuffled")
    axes.set_title("Permutation feature importance (test rows)")
    axes.tick_params(axis="y", labelsize=8)
    return _save(figure, path)


def _predictions_plot(manifest: dict[str, Any], path: Path) -> bool:
    found = (manifest.get("details") or {}).get("predictions")
    if not found:
        return False
    figure, axes = _figure(5, 5)
    actual, predicted = found["actual"], found["predicted"]
    axes.scatter(actual, predicted, s=10, alpha=0.6)
    low, high = min(actual + predicted), max(actual + predicted)
    axes.plot([low, high], [low, high], color="black", linewidth=1)
    axes.set_xlabel("actual")
    axes.set_ylabel("predicted")
    axes.set_title("Predicted vs actual (test rows)")
    return _save(figure, path)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def render_html(manifest: dict[str, Any], version: int, plots: dict[str, bytes]) -> str:
    """One HTML page with everything inline (plots as base64), so it can be saved or mailed as one file."""
    from fermion.train.problem import METRICS

    e = html.escape
    ref = f"{manifest['name']}@{version}"
    metric = manifest["metric"]
    rows = manifest["rows"]
    metric_rows = "".join(
        f"<tr><th>{e(METRICS[k].label if k in METRICS else k)}</th><td>{_format(v)}</td></tr>"
        for k, v in manifest["metrics"].items()
    )
    ok = sorted(
        (t for t in manifest["trials"] if t["status"] == "ok" and t["score"] is not None),
        key=lambda t: -t["score"] if metric["greater_is_better"] else t["score"],
    )
    leaderboard = "".join(
        f"<tr><td>{t['number']}</td><td>{e(t['family'])}</td><td>{_format(t['score'])}</td><td>{_format(t['seconds'])}</td>"
        f"<td><code>{e(json.dumps(t['params']))}</code></td></tr>"
        for t in ok[:10]
    )
    inputs = "".join(
        f"<tr><td>{e(str(i['name']))}</td><td>{e(i['kind'])}</td><td>{e(', '.join(map(str, i['choices'] or []))[:200])}</td></tr>"
        for i in manifest["inputs"]
    )
    ignored = "".join(f"<li><code>{e(k)}</code>: {e(v)}</li>" for k, v in manifest["ignored"].items())
    images = "".join(
        f'<figure><img alt="{e(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}"></figure>'
        for name, data in plots.items()
    )
    libraries = ", ".join(f"{e(k)} {e(v)}" for k, v in manifest["libraries"].items())
    failed = [t for t in manifest["trials"] if t["status"] != "ok"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Fermion model report: {e(ref)}</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em; color: #1d2330; }}
table {{ border-collapse: collapse; margin: .5em 0 1.5em; }} th, td {{ border: 1px solid #d5d9e0; padding: .3em .7em; text-align: left; }}
th {{ background: #f3f5f8; }} code {{ font-size: 12px; }} figure {{ display: inline-block; margin: .5em; }} img {{ max-width: 100%; }}
.note {{ color: #5a6272; }}
</style></head><body>
<h1>Model report: {e(ref)}</h1>
<p class="note">Trained {e(manifest["created_at"])} on dataset <b>{e(manifest["dataset"])}</b> to predict <b>{e(str(manifest["target"]))}</b>
({e(manifest["task"])}). Serve it with <code>fermion serve model:{e(ref)}</code> or <code>fermion deploy NAME model:{e(ref)}</code>.</p>
<h2>Test metrics</h2>
<p class="note">Measured on {rows["test"]} held-out rows that the search never saw (trained on {rows["train"]}).</p>
<table>{metric_rows}</table>
<h2>Chosen model</h2>
<table><tr><th>family</th><td>{e(manifest["family_label"])}</td></tr>
<tr><th>parameters</th><td><code>{e(json.dumps(manifest["params"]))}</code></td></tr>
<tr><th>cross-validated {e(metric["label"])}</th><td>{_format(manifest["cv_score"])}</td></tr>
<tr><th>trials</th><td>{len(manifest["trials"])} ({len(failed)} failed or cut); stopped by: {e(manifest["stopped"])}</td></tr>
<tr><th>time</th><td>{manifest["training_seconds"]:.1f} s of a {manifest["budget_s"]:g} s budget</td></tr>
<tr><th>seed</th><td>{manifest["seed"]}</td></tr>
{f"<tr><th>note</th><td>{e(manifest['note'])}</td></tr>" if manifest.get("note") else ""}</table>
<h2>Plots</h2>{images}
<h2>Best trials</h2>
<table><tr><th>#</th><th>family</th><th>{e(metric["label"])}</th><th>seconds</th><th>parameters</th></tr>{leaderboard}</table>
<h2>Inputs</h2>
<table><tr><th>column</th><th>used as</th><th>allowed values</th></tr>{inputs}</table>
{f"<p>Left out:</p><ul>{ignored}</ul>" if ignored else ""}
<p class="note">Libraries: {libraries}.</p>
</body></html>
"""

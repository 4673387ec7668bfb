"""The training benchmark: Fermion's trainer against FLAML, a default random forest and a default LightGBM.

    python benchmarks/training.py                          # 5 datasets × 10 s and 60 s (about 15 minutes on 2 cores)
    python benchmarks/training.py --quick                  # the 10 s budget only
    python benchmarks/training.py --datasets iris,diabetes --budgets 5,30 --seed 1

Every tool gets the same held-out split of each dataset and is scored with the same metric (Fermion's
default: ROC AUC for two classes, log loss for more, RMSE for numbers). Writes
benchmarks/results/training-<time>.json and benchmarks/TRAINING.md. See benchmarks/README.md for the method.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite.machine import checkout_commit, load_average, machine_info  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
DATASETS = ("iris", "wine", "breast_cancer", "digits", "diabetes")
TOOLS = ("fermion", "flaml", "random_forest", "lightgbm")
LABELS = {"fermion": "Fermion", "flaml": "FLAML", "random_forest": "RandomForest (default)", "lightgbm": "LightGBM (default)"}
SEARCHERS = ("fermion", "flaml")  # the tools given a budget; the defaults fit once per dataset
#: A searcher may overrun its budget by this share before the table calls it over budget.
BUDGET_SLACK = 0.10
#: Scores are ranked as the table shows them: equal to this many decimals is a tie.
RANK_DECIMALS = 4
VERSIONED = ("fermion", "flaml", "lightgbm", "xgboost", "scikit-learn", "numpy", "pandas")


def _say(line: str) -> None:
    print(line, flush=True)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# -- the data --------------------------------------------------------------------------------------


@dataclass
class Split:
    """One bundled dataset, its metric and the held-out split every tool gets."""

    name: str
    task: str
    metric: Any  # fermion.train.problem.Metric
    classes: list[Any] | None
    X_train: Any
    X_test: Any
    y_train: Any
    y_test: Any

    def describe(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "metric": self.metric.name,
            "greater_is_better": self.metric.greater_is_better,
            "classes": len(self.classes) if self.classes else None,
            "features": self.X_train.shape[1],
            "train_rows": len(self.y_train),
            "test_rows": len(self.y_test),
        }


def load_split(name: str, seed: int) -> Split:
    """scikit-learn's bundled dataset `name` (no download), split 80/20 with `seed`, stratified for classes."""
    import numpy as np
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    from fermion.train.problem import CLASSIFICATION, REGRESSION, choose_metric

    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    X, y = bunch.data, bunch.target.to_numpy()
    task = REGRESSION if name == "diabetes" else CLASSIFICATION
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.2, random_state=seed, stratify=y if task == CLASSIFICATION else None
    )
    classes = np.unique(y_train).tolist() if task == CLASSIFICATION else None
    metric = choose_metric(None, task, len(classes or []))
    return Split(name, task, metric, classes, X_train, X_test, y_train, y_test)


# -- the tools -------------------------------------------------------------------------------------


@dataclass
class Result:
    """One tool on one dataset with one budget (None for the defaults, which take no budget)."""

    dataset: str
    tool: str
    budget_s: float | None
    score: float | None = None  # the dataset's metric on the held-out split
    accuracy: float | None = None
    metrics: dict[str, float] | None = None
    fit_s: float = 0.0  # wall seconds of the whole fit (a searcher: search and final refit)
    trials: int | None = None
    chosen: str | None = None  # the family or estimator the search picked
    error: str | None = None

    @property
    def over_budget(self) -> bool:
        return self.budget_s is not None and self.fit_s > self.budget_s * (1 + BUDGET_SLACK)


def fit_fermion(split: Split, budget_s: float, seed: int) -> tuple[Any, dict[str, Any]]:
    """Fermion's budgeted search (`fit_within_budget`), exactly as `fermion train` runs it on a table."""
    from fermion.train.fit import fit_within_budget
    from fermion.train.search import Problem

    problem = Problem(
        split.X_train,
        split.y_train,
        split.task,
        split.metric,
        split.classes,
        numeric=list(split.X_train.columns),
        categorical=[],
        seed=seed,
    )
    model, search = fit_within_budget(problem, "table", budget_s)
    return model, {"trials": len(search.trials), "chosen": search.chosen.get("family_label") if search.chosen else None}


def fit_flaml(split: Split, budget_s: float, seed: int) -> tuple[Any, dict[str, Any]]:
    """FLAML's AutoML with its defaults, told the same metric, budget and seed."""
    from flaml import AutoML

    from fermion.train.problem import CLASSIFICATION

    automl = AutoML()
    automl.fit(
        split.X_train,
        split.y_train,
        task="classification" if split.task == CLASSIFICATION else "regression",
        time_budget=budget_s,
        metric=split.metric.name,
        seed=seed,
        verbose=0,
    )
    # FLAML counts its trials per learner; `config_history` holds only the improvements of its best.
    tried = getattr(automl, "_iter_per_learner", None)
    return automl, {"trials": sum(tried.values()) if tried else None, "chosen": automl.best_estimator}


def fit_random_forest(split: Split, seed: int) -> tuple[Any, dict[str, Any]]:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    from fermion.train.problem import CLASSIFICATION

    kind = RandomForestClassifier if split.task == CLASSIFICATION else RandomForestRegressor
    return kind(random_state=seed, n_jobs=-1).fit(split.X_train, split.y_train), {}


def fit_lightgbm(split: Split, seed: int) -> tuple[Any, dict[str, Any]]:
    import lightgbm

    from fermion.train.problem import CLASSIFICATION

    kind = lightgbm.LGBMClassifier if split.task == CLASSIFICATION else lightgbm.LGBMRegressor
    return kind(random_state=seed, verbose=-1).fit(split.X_train, split.y_train), {}


def measure(split: Split, tool: str, budget_s: float | None, fit: Callable[[], tuple[Any, dict[str, Any]]], seed: int) -> Result:
    """Fit with `fit`, timing it, then score the model on the held-out split with every metric of the task."""
    from fermion.train.evaluate import test_metrics
    from fermion.train.search import Problem

    result = Result(split.name, tool, budget_s)
    began = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, found = fit()
        result.fit_s = time.perf_counter() - began
        problem = Problem(split.X_train, split.y_train, split.task, split.metric, split.classes, seed=seed)
        metrics, _ = test_metrics(problem, model, split.X_test, split.y_test)
    except Exception as exc:  # a tool that fails is reported and ranked last, not a crash of the whole run
        result.fit_s = time.perf_counter() - began
        result.error = f"{type(exc).__name__}: {str(exc)[:300]}"
        return result
    result.metrics = metrics
    result.score = metrics.get(split.metric.name)
    result.accuracy = metrics.get("accuracy")
    result.trials, result.chosen = found.get("trials"), found.get("chosen")
    return result


def run_dataset(split: Split, budgets: list[float], seed: int) -> Iterator[Result]:
    """The two defaults once, then Fermion and FLAML at each budget, one after the other (never side by side)."""
    yield measure(split, "random_forest", None, partial(fit_random_forest, split, seed), seed)
    yield measure(split, "lightgbm", None, partial(fit_lightgbm, split, seed), seed)
    for budget in budgets:
        yield measure(split, "fermion", budget, partial(fit_fermion, split, budget, seed), seed)
        yield measure(split, "flaml", budget, partial(fit_flaml, split, budget, seed), seed)


# -- ranks and checks ------------------------------------------------------------------------------


def _shown(score: float, greater_is_better: bool) -> float:
    """A score as ranked: rounded as the table shows it, negated when lower is better (bigger is always better)."""
    value = round(score, RANK_DECIMALS)
    return value if greater_is_better else -value


def rank(results: list[Result], greater_is_better: bool) -> dict[str, float]:
    """Rank 1 is best; ties share the average of the ranks they span; a tool without a score is last."""
    keyed = sorted(results, key=lambda r: -_shown(r.score, greater_is_better) if r.score is not None else float("inf"))
    ranks: dict[str, float] = {}
    i = 0
    while i < len(keyed):
        j = i
        while j + 1 < len(keyed) and _key(keyed[j + 1], greater_is_better) == _key(keyed[i], greater_is_better):
            j += 1
        for r in keyed[i : j + 1]:
            ranks[r.tool] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _key(result: Result, greater_is_better: bool) -> float | None:
    return _shown(result.score, greater_is_better) if result.score is not None else None


def summarize(splits: dict[str, Split], results: list[Result], budgets: list[float]) -> dict[str, Any]:
    """Ranks per (budget, dataset), mean rank per tool and budget, and the goals of the issue."""
    ranks: dict[str, dict[str, dict[str, float]]] = {}
    mean_rank: dict[str, dict[str, float]] = {}
    versus_forest: list[dict[str, Any]] = []
    for budget in budgets:
        key = f"{budget:g}"
        ranks[key] = {}
        for name, split in splits.items():
            row = [_result_for(results, name, tool, budget) for tool in TOOLS]
            ranks[key][name] = rank([r for r in row if r is not None], split.metric.greater_is_better)
            fermion, forest = _result_for(results, name, "fermion", budget), _result_for(results, name, "random_forest", budget)
            worse = (
                fermion is None
                or fermion.score is None
                or (
                    forest is not None
                    and forest.score is not None
                    and _shown(fermion.score, split.metric.greater_is_better)
                    < _shown(forest.score, split.metric.greater_is_better)
                )
            )
            versus_forest.append(
                {
                    "dataset": name,
                    "budget_s": budget,
                    "metric": split.metric.name,
                    "fermion": fermion.score if fermion else None,
                    "random_forest": forest.score if forest else None,
                    "worse": worse,
                }
            )
        mean_rank[key] = {
            tool: round(sum(ranks[key][name][tool] for name in splits) / len(splits), 3)
            for tool in TOOLS
            if all(tool in ranks[key][name] for name in splits)
        }
    over = [
        {"dataset": r.dataset, "tool": r.tool, "budget_s": r.budget_s, "fit_s": round(r.fit_s, 2)}
        for r in results
        if r.over_budget
    ]
    return {"ranks": ranks, "mean_rank": mean_rank, "versus_random_forest": versus_forest, "over_budget": over}


def _result_for(results: list[Result], dataset: str, tool: str, budget: float) -> Result | None:
    """The result of `tool` on `dataset` at `budget`; the defaults' one result stands for every budget."""
    for r in results:
        if r.dataset == dataset and r.tool == tool and (r.budget_s == budget or (r.budget_s is None and tool not in SEARCHERS)):
            return r
    return None


# -- the report ------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = RANK_DECIMALS) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _rank(value: float) -> str:
    return f"{value:g}"


def render(record: dict[str, Any]) -> str:
    """TRAINING.md from one run's record."""
    machine, summary, datasets = record["machine"], record["summary"], record["datasets"]
    results = [Result(**r) for r in record["results"]]
    budgets = record["options"]["budgets"]
    versions = ", ".join(f"{k} {v}" for k, v in record["versions"].items())
    tests = [info["test_rows"] for info in datasets.values()]
    out = [
        "# Training benchmark",
        "",
        "Written by `make bench-training` (`python benchmarks/training.py`); the method is in "
        "[README.md](README.md#training). Numbers are from one machine, one run and one held-out split per dataset "
        f"(seed {record['options']['seed']}): with test sets of {min(tests)} to {max(tests)} rows, small differences are noise.",
        "",
        f"Run {record['started']} ({record['file']}). Machine: {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['memory_gib']} GiB, {machine['os']}, Python {machine['python']}. "
        f"Load average before/after: {machine['load_average']} / {record['load_average_after']}.",
        "",
        f"Fermion at commit {record.get('commit') or 'unknown'}. Versions: {versions}.",
        "",
    ]
    loads = [load[0] for load in (machine.get("load_average"), record.get("load_average_after")) if load]
    if loads and max(loads) >= machine["cores"]:
        out += [
            f"**Busy machine**: a load average of {max(loads):g} on {machine['cores']} cores while it ran. Fit times, "
            "trial counts and the budget checks suffer most (LightGBM's threads slow down badly on a shared machine).",
            "",
        ]
    if record["options"]["quick"]:
        out += ["**Quick run** (the 10 s budget only): indicative only.", ""]
    out += ["## Goals", "", "| goal | measured | met |", "|---|---|---|"]
    for budget in budgets:
        means = summary["mean_rank"].get(f"{budget:g}", {})
        if "fermion" not in means:
            out.append(f"| {budget:g} s: Fermion's mean rank best or tied | not measured | – |")
            continue
        best = min(means.values())
        leaders = ", ".join(f"{LABELS[t]} {_rank(v)}" for t, v in sorted(means.items(), key=lambda kv: kv[1]))
        met = "met" if means["fermion"] <= best else "**not met**"
        out.append(f"| {budget:g} s: Fermion's mean rank best or tied | {leaders} | {met} |")
    for check in summary["versus_random_forest"]:
        name, budget = check["dataset"], check["budget_s"]
        met = "**not met**" if check["worse"] else "met"
        out.append(
            f"| {name}, {budget:g} s: Fermion never worse than the default RandomForest | "
            f"{check['metric']} {_fmt(check['fermion'])} vs {_fmt(check['random_forest'])} | {met} |"
        )
    for tool in SEARCHERS:
        own = [r for r in results if r.tool == tool and r.budget_s is not None]
        if not own:
            continue
        worst = max(own, key=lambda r: r.fit_s / r.budget_s)  # type: ignore[operator]
        met = "**not met**" if any(r.over_budget for r in own) else "met"
        out.append(
            f"| {LABELS[tool]}: every fit within its budget + {BUDGET_SLACK:.0%} | longest vs budget: "
            f"{worst.fit_s:.1f} s of {worst.budget_s:g} s ({worst.dataset}) | {met} |"
        )
    for budget in budgets:
        key = f"{budget:g}"
        out += [
            "",
            f"## {budget:g} s budget",
            "",
            "Held-out score (rank, 1 = best; ties share the average rank). "
            "The defaults take no budget: they are fit once per dataset and appear under every budget.",
            "",
            "| dataset | metric | " + " | ".join(LABELS[t] for t in TOOLS) + " |",
            "|---|---|" + "---:|" * len(TOOLS),
        ]
        for name, info in datasets.items():
            cells = []
            for tool in TOOLS:
                r = _result_for(results, name, tool, budget)
                got = summary["ranks"][key][name].get(tool)
                cells.append("–" if r is None else ("failed" if r.score is None else f"{_fmt(r.score)} ({_rank(got)})"))
            arrow = "↑" if info["greater_is_better"] else "↓"
            out.append(f"| {name} | {info['metric']} {arrow} | " + " | ".join(cells) + " |")
        means = summary["mean_rank"].get(key, {})
        out.append("| **mean rank** | | " + " | ".join(f"**{_rank(means[t])}**" if t in means else "–" for t in TOOLS) + " |")
    out += [
        "",
        "## Every fit",
        "",
        "Wall seconds of the whole fit (for the searchers: the search and the final refit on the training split). "
        "Trials: Fermion's cross-validated trials; FLAML's trials summed over its learners.",
        "",
        "| dataset | budget | tool | score | accuracy | fit s | trials | chosen | note |",
        "|---|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for name, info in datasets.items():
        for r in sorted((r for r in results if r.dataset == name), key=lambda r: (r.budget_s or 0, TOOLS.index(r.tool))):
            note = r.error or ("**over budget**" if r.over_budget else "")
            out.append(
                f"| {name} | {'–' if r.budget_s is None else f'{r.budget_s:g} s'} | {LABELS[r.tool]} | "
                f"{info['metric']} {_fmt(r.score)} | {_fmt(r.accuracy)} | {r.fit_s:.2f} | "
                f"{'' if r.trials is None else r.trials} | {r.chosen or ''} | {note} |"
            )
    out += [
        "",
        "## Datasets",
        "",
        "| dataset | task | classes | features | train rows | test rows |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, info in datasets.items():
        out.append(
            f"| {name} | {info['task']} | {info['classes'] or '–'} | {info['features']} | {info['train_rows']} | {info['test_rows']} |"
        )
    return "\n".join(out) + "\n"


# -- the run ---------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    from fermion.train.run import library_versions

    return library_versions(list(VERSIONED))


def _line(result: Result, metric: str) -> str:
    budget = "default" if result.budget_s is None else f"{result.budget_s:g} s"
    if result.error:
        return f"  {LABELS[result.tool]:<24} {budget:>7}  failed after {result.fit_s:.1f} s: {result.error}"
    extra = f"  {result.trials} trials → {result.chosen}" if result.trials is not None else ""
    over = "  OVER BUDGET" if result.over_budget else ""
    return f"  {LABELS[result.tool]:<24} {budget:>7}  {metric} {result.score:.4f}  fit {result.fit_s:6.2f} s{extra}{over}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fermion's trainer vs FLAML and default models (see benchmarks/README.md).")
    parser.add_argument("--budgets", default="10,60", help="seconds per search, comma-separated (default 10,60)")
    parser.add_argument("--quick", action="store_true", help="the 10 s budget only")
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"from {','.join(DATASETS)}")
    parser.add_argument("--seed", type=int, default=0, help="the split's, the searches' and the models' seed")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "TRAINING.md", help="where to write the Markdown table")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results", help="folder for training-<time>.json")
    args = parser.parse_args(argv)

    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    if unknown := [d for d in names if d not in DATASETS]:
        parser.error(f"unknown dataset(s) {', '.join(unknown)}; pick from {', '.join(DATASETS)}")
    try:
        budgets = [10.0] if args.quick else [float(b) for b in args.budgets.split(",") if b.strip()]
    except ValueError:
        parser.error(f"--budgets takes seconds separated by commas, e.g. 10,60; got {args.budgets!r}")
    if not budgets or min(budgets) < 2:
        parser.error(f"every budget must be at least 2 s (Fermion's smallest); got {args.budgets!r}")

    # Imported before any clock starts, so that no tool pays for the others' imports.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from flaml import AutoML  # noqa: F401
    except ImportError as exc:
        _say(f"FLAML's AutoML cannot be imported ({exc}); install it with: {sys.executable} -m pip install 'flaml[automl]'")
        return 1
    import lightgbm  # noqa: F401
    import sklearn.ensemble  # noqa: F401

    import fermion.train.fit  # noqa: F401

    stamp = dt.datetime.now().strftime("%Y-%m-%dT%H%M%S")
    args.results.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)
    record: dict[str, Any] = {
        "bench": "training",
        "started": stamp,
        "options": {"budgets": budgets, "datasets": names, "seed": args.seed, "quick": args.quick},
        "machine": machine_info(),
        "versions": _versions(),
        "commit": checkout_commit(("fermion/train",)),  # which trainer was measured
        "gateway": "none",  # the trainers run in this process: no server, no gateway
    }
    began = time.monotonic()
    _say(
        f"Training benchmark{' (quick)' if args.quick else ''}: {', '.join(names)} · budgets "
        f"{', '.join(f'{b:g} s' for b in budgets)} · seed {args.seed}"
    )
    splits: dict[str, Split] = {}
    results: list[Result] = []
    try:
        for name in names:
            split = splits[name] = load_split(name, args.seed)
            info = split.describe()
            _say(
                f"\n{name}: {info['task']}, {info['train_rows']} + {info['test_rows']} rows, {info['features']} features, "
                f"{split.metric.name}"
            )
            for result in run_dataset(split, budgets, args.seed):
                results.append(result)
                _say(_line(result, split.metric.name))
    except KeyboardInterrupt:
        _say("\ninterrupted: nothing written")
        return 130

    record["load_average_after"] = load_average()
    record["datasets"] = {name: split.describe() for name, split in splits.items()}
    record["results"] = [asdict(r) for r in results]
    record["summary"] = summarize(splits, results, budgets)
    path = args.results / f"training-{stamp}.json"
    record["file"] = path.name
    path.write_text(json.dumps(record, indent=2) + "\n")
    args.out.write_text(render(record))
    _say(f"\n→ {path}\n→ {args.out}")
    for budget, means in record["summary"]["mean_rank"].items():
        _say(
            f"mean rank, {budget} s: "
            + ", ".join(f"{LABELS[t]} {_rank(v)}" for t, v in sorted(means.items(), key=lambda kv: kv[1]))
        )
    _say(f"done in {(time.monotonic() - began) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())

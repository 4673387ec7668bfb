"""`sklearn:PATH` — a fitted scikit-learn estimator or pipeline becomes a typed, batched Service.

    fermion serve sklearn:./model.skops
    fermion serve sklearn:./model.joblib --trust-pickle

Files: `.skops` (safe format, recommended) or `.joblib`/`.pkl`/`.pickle` (only with
`--trust-pickle`: unpickling runs whatever code the file contains). In a `.skops` file, classes
defined by scikit-learn itself and numpy ufuncs are trusted; any other type or function is
refused unless `--trust-pickle` says the file's author is trusted (see `sklearn_files`).

Request: one typed field per column when the model was fitted on a DataFrame
(`feature_names_in_`), else `features: list[float]` of exactly `n_features_in_` values.
Endpoints: `predict` and, when the estimator has it, `predict_proba` ({label: probability}).
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from fermion.models._tabular import (
    RequestField,
    described,
    field_names,
    generated_method,
    listing,
    probabilities_type,
    service_class,
)
from fermion.models.kinds import SourceError
from fermion.models.resolve import resolve_model_dir
from fermion.models.sklearn_files import model_file, read_model
from fermion.responses import InvalidInput
from fermion.service import Service

#: Labels and categories are spelled out in the schema (enums) up to this many.
MAX_ENUM = 100


@dataclass
class _Column:
    """What the fitted model tells about one input column."""

    kind: str = "number"  # or "string"
    choices: tuple[Any, ...] | None = None
    example: Any = None
    nullable: bool = False


class SklearnModel(Service):
    """A fitted scikit-learn estimator; subclassed per model with endpoints generated from it."""

    def __init__(self, model: Any, columns: list[tuple[str, str, str]] | None) -> None:
        self.model = model
        # (field, column, kind) per DataFrame column; None → one `features` list
        self.columns = columns
        self._pandas: Any = None
        if columns is not None and importlib.util.find_spec("pandas") is not None:
            import pandas

            self._pandas = pandas

    def rows(self, values: dict[str, list[Any]]) -> Any:
        """The model's input for a batch of requests: a DataFrame or a 2-D float array."""
        import numpy as np

        if self.columns is None:
            return np.array(values["features"], dtype=np.float64)  # None → NaN
        data = {}
        for field, column, kind in self.columns:
            if kind == "string":
                data[column] = np.array([np.nan if v is None else v for v in values[field]], dtype=object)
            else:
                data[column] = np.array(values[field], dtype=np.float64)
        if self._pandas is not None:
            return self._pandas.DataFrame(data, columns=[c for _, c, _ in self.columns])
        return np.column_stack([data[c] for _, c, _ in self.columns])

    def call(self, method: str, values: dict[str, list[Any]]) -> Any:
        """Run `self.model.<method>` on a batch; input the model rejects becomes a 422."""
        X = self.rows(values)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "X does not have valid feature names" and the like
            try:
                return getattr(self.model, method)(X)
            except (ValueError, TypeError) as exc:
                raise InvalidInput(f"the model cannot use this input: {exc}") from None


def load(name: str, trust_pickle: bool = False, **options: Any) -> Service:
    """Build the Service for `sklearn:PATH`."""
    if options:
        raise SourceError(f"sklearn: sources do not take {', '.join('--' + k.replace('_', '-') for k in options)}")
    path = model_file(resolve_model_dir(name, "sklearn"), name)
    model = read_model(path, name, trust_pickle)
    return build_service(model, name, Path(path).name)


# -- schema from the fitted model ----------------------------------------------------------------


def build_service(model: Any, name: str, filename: str) -> Service:
    """The Service for a loaded estimator: request fields, label types and endpoints from the model."""
    estimator = type(model).__name__
    _check_servable(model, name, estimator)
    fields, spec = _request_fields(model, name)
    label = _label_type(model, SklearnModel(model, spec), fields)
    shape = "a `features` list" if spec is None else f"{len(fields)} fields ({listing([f.name for f in fields])})"
    methods = {
        "predict": generated_method(
            "predict",
            fields,
            label,
            lambda self, values: self.call("predict", values).tolist(),
            f"Predict with the {estimator} for one row.\n\nThe row is sent as {shape}.",
            batched=True,
        )
    }
    classes = getattr(model, "classes_", None)
    keys = [str(c) for c in classes.tolist()] if classes is not None and getattr(classes, "ndim", 0) == 1 else None
    if keys is not None and hasattr(model, "predict_proba"):
        methods["predict_proba"] = generated_method(
            "predict_proba",
            fields,
            probabilities_type(keys, MAX_ENUM),
            lambda self, values: [dict(zip(keys, row, strict=True)) for row in self.call("predict_proba", values).tolist()],
            "Probability of each class for one row.\n\nThe keys are the model's classes; the values sum to 1.",
            batched=True,
        )
    summary = f"scikit-learn {estimator} from {filename}." + (f" Classes: {listing(keys)}." if keys else "")
    return service_class(SklearnModel, Path(filename).stem, summary, methods)(model, spec)


def _check_servable(model: Any, name: str, estimator: str) -> None:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if not hasattr(model, "predict"):
        raise SourceError(
            f"sklearn:{name} holds a {estimator}, which has no predict(); Fermion serves fitted estimators and pipelines"
        )
    try:
        check_is_fitted(model)
    except NotFittedError:
        raise SourceError(f"sklearn:{name} holds a {estimator} that was never fitted; call fit() before saving it") from None
    except TypeError:
        pass  # not a scikit-learn estimator: serve it since it predicts


def _request_fields(model: Any, name: str) -> tuple[list[RequestField], list[tuple[str, str, str]] | None]:
    """One field per named column (with the column's kind), else a single `features` list."""
    allow_nan = _allows_nan(model)
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return [_features_field(model, allow_nan)], None
    names = [str(n) for n in names]
    columns = _describe_columns(model, names)
    fields, spec = [], []
    for field, column in zip(field_names(names), names, strict=True):
        fields.append(RequestField(field, column, _column_type(column, columns[column], allow_nan)))
        spec.append((field, column, columns[column].kind))
    needs_frame = any(c.kind == "string" for c in columns.values()) or hasattr(_first_steps(model), "transformers_")
    if needs_frame and importlib.util.find_spec("pandas") is None:
        raise SourceError(f"sklearn:{name} selects its columns by name, which needs pandas: pip install pandas")
    return fields, spec


def _allows_nan(model: Any) -> bool:
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(model).input_tags.allow_nan)
    except Exception:
        return False


def _first_steps(model: Any) -> Any:
    """The step that first sees the raw input (through nested pipelines)."""
    while hasattr(model, "steps"):
        steps = [step for _, step in model.steps if step not in (None, "passthrough")]
        if not steps:
            return None
        model = steps[0]
    return model


def _describe_columns(model: Any, names: list[str]) -> dict[str, _Column]:
    """Column kinds, choices and examples read from the first transformers of a pipeline."""
    info = {n: _Column() for n in names}
    first = _first_steps(model)
    if first is not None and hasattr(first, "transformers_"):  # a fitted ColumnTransformer
        for _, transformer, selection in first.transformers_:
            _describe(transformer, _selected(selection, names), info)
    elif first is not None:
        _describe(first, names, info)
    return info


def _selected(selection: Any, names: list[str]) -> list[str]:
    """A ColumnTransformer's column selection as column names."""
    import numpy as np

    if isinstance(selection, str):
        return [selection]
    if isinstance(selection, slice):
        return names[selection]
    try:
        items = list(np.asarray(selection).tolist())
    except Exception:
        return []
    if items and all(isinstance(i, bool) for i in items):
        return [n for n, keep in zip(names, items, strict=False) if keep]
    return [names[i] if isinstance(i, int) and -len(names) <= i < len(names) else str(i) for i in items]


def _describe(transformer: Any, columns: list[str], info: dict[str, _Column]) -> None:
    if transformer is None or isinstance(transformer, str):
        return
    for step in [s for _, s in transformer.steps] if hasattr(transformer, "steps") else [transformer]:
        if step is None or isinstance(step, str):
            continue
        categories = getattr(step, "categories_", None)
        if isinstance(categories, list) and len(categories) == len(columns):
            strict = getattr(step, "handle_unknown", "error") == "error"
            for column, values in zip(columns, categories, strict=True):
                _categorical(info.get(column), values, strict)
            return  # encoders change the columns: later steps see something else
        for attribute in ("statistics_", "mean_"):  # SimpleImputer, StandardScaler
            values = getattr(step, attribute, None)
            if values is not None and getattr(values, "shape", ()) == (len(columns),):
                for column, value in zip(columns, values.tolist(), strict=True):
                    _set_example(info.get(column), value, nullable=attribute == "statistics_")
        if getattr(step, "add_indicator", False):
            return


def _categorical(column: _Column | None, values: Any, strict: bool) -> None:
    if column is None:
        return
    known = [v for v in values.tolist() if v is not None and v == v]  # drop None and NaN
    if values.dtype.kind in "OUS":
        column.kind = "string"
        known = [str(v) for v in known]
        if strict and 0 < len(known) <= MAX_ENUM:
            column.choices = tuple(known)
    column.nullable = column.nullable or len(known) < len(values)
    if known:
        column.example = known[0]


def _set_example(column: _Column | None, value: Any, nullable: bool) -> None:
    if column is None:
        return
    if isinstance(value, str):
        column.kind = "string"
        column.example = value
    elif isinstance(value, (int, float)) and value == value:
        column.example = round(float(value), 3)
    column.nullable = column.nullable or nullable


def _column_type(column: str, info: _Column, allow_nan: bool) -> Any:
    if info.kind == "string":
        base: Any = Literal[info.choices] if info.choices else str  # type: ignore[valid-type]
        example = info.example if info.example is not None else (info.choices[0] if info.choices else "")
    else:
        base, example = float, 0.0 if info.example is None else info.example
    if info.nullable or (allow_nan and info.kind == "number"):
        base = base | None
    return described(base, f"Column '{column}'.", example)


def _features_field(model: Any, allow_nan: bool) -> RequestField:
    count = getattr(model, "n_features_in_", None)
    item: Any = float | None if allow_nan else float
    if count is None:
        return RequestField(
            "features",
            "features",
            Annotated[list[item], Field(min_length=1, description="The feature values, in training order.")],
        )
    first = _first_steps(model)
    means = getattr(first, "mean_", None)
    example = [round(v, 3) for v in means.tolist()] if means is not None and len(means) == count else [0.0] * count
    description = f"The {count} feature values, in the order the model was trained on."
    return RequestField(
        "features",
        "features",
        Annotated[list[item], Field(min_length=count, max_length=count, description=description, examples=[example])],
    )


def _label_type(model: Any, service: SklearnModel, fields: list[RequestField]) -> Any:
    """What `predict` returns per row: the classes as an enum, else the type a trial prediction has."""
    classes = getattr(model, "classes_", None)
    if classes is not None and getattr(classes, "ndim", 0) == 1:
        labels = classes.tolist()
        if 0 < len(labels) <= MAX_ENUM and all(isinstance(v, (str, int)) for v in labels):
            return Literal[tuple(labels)]  # type: ignore[valid-type]
    trial = _trial_prediction(service, fields)
    item: Any = Any
    if trial is not None:
        kind = trial.dtype.kind
        item = {"b": bool, "i": int, "u": int, "f": float, "O": str, "U": str}.get(kind, Any)
        if trial.ndim == 2:
            return list[item]
    elif classes is None and hasattr(model, "predict"):
        from sklearn.base import is_regressor

        item = float if is_regressor(model) else Any
    return item


def _trial_prediction(service: SklearnModel, fields: list[RequestField]) -> Any:
    """`predict` on the docs' example row, to learn the output's type and shape; None if it fails."""
    values: dict[str, list[Any]] = {}
    for field in fields:
        examples = [m.examples for m in getattr(field.annotation, "__metadata__", ()) if getattr(m, "examples", None)]
        if not examples:
            return None
        values[field.name] = [examples[0][0]]
    try:
        return service.call("predict", values)
    except Exception:
        return None

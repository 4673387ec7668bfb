"""`model:NAME@VERSION` — a model trained by `fermion train`, served from the registry.

    fermion serve model:churn@3
    fermion deploy churn model:churn@3

The request schema comes from the training columns recorded in the registry: one typed field per
input column (numbers, booleans, categories as enums, free text), or one `image` upload for image
models. Endpoints: `predict` and, for classifiers, `predict_proba` ({label: probability}).
`model:NAME` alone serves the latest version at load time; deployments should name a version.
"""

from __future__ import annotations

from typing import Any, Literal

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
from fermion.models.trained.errors import TrainingError
from fermion.models.trained.registry import REGISTRY_TYPES, ModelRegistry
from fermion.responses import InvalidInput
from fermion.service import Service

MAX_ENUM = 100


class TrainedModel(Service):
    """A registered model version; subclassed per version with endpoints generated from its manifest."""

    def __init__(self, version: Any) -> None:
        self.version = version
        self.manifest = version.manifest
        self.fields: list[RequestField] = []
        self.model: Any = None
        self.session: Any = None
        self.embedder: Any = None

    def setup(self) -> None:
        m = self.manifest
        if m["format"] == "onnx":
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3
            self.session = onnxruntime.InferenceSession(str(self.version.model_file), options, providers=["CPUExecutionProvider"])
        else:
            from fermion.models.sklearn_files import read_model

            self.model = read_model(str(self.version.model_file), self.version.ref, False, REGISTRY_TYPES, kind="model")
        if m.get("embedding"):
            from fermion.models.trained.features import TextEmbedder

            self.embedder = TextEmbedder()

    # -- input -------------------------------------------------------------------------------------

    def inputs(self, values: dict[str, list[Any]]) -> Any:
        """The batch as the model's input: the encoded frame for tables, a pixel array for images."""
        import numpy as np

        if self.manifest["kind"] == "images":
            from fermion.models.hf.vision import open_image
            from fermion.models.trained.features import image_pixels

            image = self.manifest["image"]
            return np.stack([image_pixels(open_image(f), image["side"], image["mode"]) for f in values["image"]])
        import pandas as pd

        from fermion.models.trained.features import encode_frame

        frame = pd.DataFrame({f.source: values[f.name] for f in self.fields})
        return encode_frame(frame, self.manifest["inputs"], self.embedder)

    def probabilities(self, X: Any) -> Any:
        import numpy as np

        if self.session is not None:
            shape = self.manifest["image"]["shape"]
            logits = self.session.run(None, {"image": X.reshape((-1, *shape)).astype(np.float32) - 0.5})[0]
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            return exp / exp.sum(axis=1, keepdims=True)
        return self.model.predict_proba(X)

    def predict_rows(self, values: dict[str, list[Any]]) -> list[Any]:
        X = self._guarded(lambda: self.inputs(values))
        if self.manifest["task"] == "classification":
            classes = self.manifest["classes"]
            return [classes[i] for i in self._guarded(lambda: self.probabilities(X)).argmax(axis=1).tolist()]
        return [float(v) for v in self._guarded(lambda: self.model.predict(X)).tolist()]

    def proba_rows(self, values: dict[str, list[Any]]) -> list[dict[str, float]]:
        X = self._guarded(lambda: self.inputs(values))
        keys = [str(c) for c in self.manifest["classes"]]
        return [dict(zip(keys, row, strict=True)) for row in self._guarded(lambda: self.probabilities(X)).tolist()]

    @staticmethod
    def _guarded(run: Any) -> Any:
        try:
            return run()
        except InvalidInput:
            raise
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"the model cannot use this input: {exc}") from None


def load(name: str, **options: Any) -> Service:
    """Build the Service for `model:NAME[@VERSION]` from the registry in the data dir."""
    if options:
        raise SourceError(f"model: sources do not take {', '.join('--' + k.replace('_', '-') for k in options)}")
    registry = ModelRegistry()
    try:
        version = registry.get(name.strip())
    except TrainingError as exc:
        raise SourceError(
            f"model:{name}: {exc.message} (registry: {registry.root}; set FERMION_HOME to use another data dir)"
        ) from None
    if not version.model_file.is_file():
        raise SourceError(f"model:{version.ref}: the model file {version.model_file} is missing; train the model again")
    return build_service(version)


def build_service(version: Any) -> Service:
    m = version.manifest
    fields = _fields(m)
    classification = m["task"] == "classification"
    label = _label_type(m["classes"]) if classification else float
    shape = "an `image` upload" if m["kind"] == "images" else f"{len(fields)} fields ({listing([f.name for f in fields])})"
    methods = {
        "predict": generated_method(
            "predict",
            fields,
            label,
            lambda self, values: self.predict_rows(values),
            f"Predict {m['target']!r} for one row.\n\nThe row is sent as {shape}.",
            batched=True,
        )
    }
    if classification:
        keys = [str(c) for c in m["classes"]]
        methods["predict_proba"] = generated_method(
            "predict_proba",
            fields,
            probabilities_type(keys, MAX_ENUM),
            lambda self, values: self.proba_rows(values),
            "Probability of each class for one row.\n\nThe keys are the classes; the values sum to 1.",
            batched=True,
        )
    metric = m["metric"]
    test = m["metrics"].get(metric["name"])
    summary = (
        f"{m['family_label']} trained by Fermion on {m['dataset']} to predict {m['target']!r} ({m['task']})."
        + (f" Test {metric['label']}: {test:.4g}." if isinstance(test, (int, float)) else "")
        + (f" Classes: {listing(keys)}." if classification else "")
    )
    service = service_class(TrainedModel, version.name, summary, methods)(version)
    service.fields = fields
    return service


def _fields(manifest: dict[str, Any]) -> list[RequestField]:
    if manifest["kind"] == "images":
        from fermion.models.hf.vision import ImageFile

        return [RequestField("image", "image", ImageFile)]
    specs = manifest["inputs"]
    names = field_names([s["name"] for s in specs])
    return [RequestField(field, spec["name"], _column_type(spec)) for field, spec in zip(names, specs, strict=True)]


def _column_type(spec: dict[str, Any]) -> Any:
    kind, example = spec["kind"], spec.get("example")
    if kind == "number":
        base: Any = float
    elif kind == "boolean":
        base = bool
    elif kind == "category" and spec.get("choices"):
        base = Literal[tuple(str(c) for c in spec["choices"])]  # type: ignore[valid-type]
        example = str(example) if example is not None else None
    else:
        base = str
        example = str(example) if example is not None else None
    if spec.get("nullable"):
        base = base | None
    what = {
        "number": "A number",
        "boolean": "true or false",
        "category": "One of the categories seen in training",
        "text": "Free text",
    }
    return described(base, f"Column '{spec['name']}': {what.get(kind, kind)}.", example)


def _label_type(classes: list[Any]) -> Any:
    if 0 < len(classes) <= MAX_ENUM and all(isinstance(c, (str, int)) for c in classes):
        return Literal[tuple(classes)]  # type: ignore[valid-type]
    return Any

"""Small scikit-learn and ONNX models for the `sklearn:` and `onnx:` tests, built offline in seconds.

Each builder trains on a dataset bundled with scikit-learn (iris, wine, diabetes) or writes an
ONNX graph by hand, saves it under `folder` and returns the path with what the test compares against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Trained:
    """A saved model, the in-process estimator it was saved from, and rows to ask it about."""

    path: Path
    model: Any
    rows: Any


def iris_frame_pipeline(folder: Path) -> Trained:
    """Iris as a DataFrame plus a text column, one-hot + scaling in a ColumnTransformer, string labels."""
    from sklearn.compose import make_column_transformer
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    iris = load_iris(as_frame=True)
    frame = iris.data.copy()
    frame["colour"] = np.where(iris.data["petal width (cm)"] > 1.0, "purple", "white")
    labels = np.asarray(iris.target_names)[iris.target]
    columns = make_column_transformer((OneHotEncoder(), ["colour"]), remainder=StandardScaler())
    model = make_pipeline(columns, LogisticRegression(max_iter=1000)).fit(frame, labels)
    return Trained(_skops(model, folder / "iris.skops"), model, frame.iloc[::5])


def wine_forest(folder: Path) -> Trained:
    """A random forest on the 13 wine features as a plain array (no column names)."""
    from sklearn.datasets import load_wine
    from sklearn.ensemble import RandomForestClassifier

    X, y = load_wine(return_X_y=True)
    model = RandomForestClassifier(n_estimators=8, max_depth=4, random_state=0).fit(X, y)
    return Trained(_skops(model, folder / "wine.skops"), model, X[::9])


def diabetes_ridge(folder: Path) -> Trained:
    """A ridge regression on the 10 diabetes features, saved with skops and, for the pickle tests, with joblib."""
    import joblib
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    X, y = load_diabetes(return_X_y=True)
    model = Ridge(alpha=0.5).fit(X, y)
    joblib.dump(model, folder / "diabetes.joblib")
    return Trained(_skops(model, folder / "diabetes.skops"), model, X[::20])


def untrusted_skops(folder: Path) -> Path:
    """A pipeline whose FunctionTransformer holds `numpy.clip`, a function skops does not trust."""
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    X, y = load_diabetes(return_X_y=True)
    model = make_pipeline(FunctionTransformer(np.clip, kw_args={"a_min": -0.1, "a_max": 0.1}), Ridge()).fit(X, y)
    return _skops(model, folder / "clipped.skops")


def _skops(model: Any, path: Path) -> Path:
    import skops.io

    skops.io.dump(model, path)
    return path


# -- ONNX --------------------------------------------------------------------------------------


def iris_onnx(folder: Path) -> Trained:
    """An iris logistic regression with string labels, converted by skl2onnx (label + probability map)."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    iris = load_iris()
    X = iris.data.astype(np.float32)
    model = LogisticRegression(max_iter=1000).fit(X, np.asarray(iris.target_names)[iris.target])
    path = folder / "iris.onnx"
    path.write_bytes(to_onnx(model, X[:1]).SerializeToString())
    return Trained(path, model, X[::10])


def diabetes_onnx(folder: Path) -> Trained:
    """A diabetes ridge regression converted by skl2onnx (output `variable`, float [None, 1])."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    X, y = load_diabetes(return_X_y=True)
    X = X.astype(np.float32)
    model = Ridge().fit(X, y)
    path = folder / "diabetes.onnx"
    path.write_bytes(to_onnx(model, X[:1]).SerializeToString())
    return Trained(path, model, X[::25])


def affine_onnx(folder: Path, batch: int | str = "batch", name: str = "affine.onnx") -> Path:
    """A hand-written graph: `scores = x @ W + B + shift` and `best = argmax(scores)`, two named inputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = (np.arange(12, dtype=np.float32).reshape(4, 3) - 5) / 10
    bias = np.array([0.5, -0.25, 0.0], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["biased"]),
            helper.make_node("Add", ["biased", "shift"], ["scores"]),
            helper.make_node("ArgMax", ["scores"], ["best"], axis=1, keepdims=0),
        ],
        "affine",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4]),
            helper.make_tensor_value_info("shift", TensorProto.FLOAT, [batch, 3]),
        ],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 3]),
            helper.make_tensor_value_info("best", TensorProto.INT64, [batch]),
        ],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="fermion-tests")
    model.ir_version = 9
    onnx.checker.check_model(model)
    path = folder / name
    onnx.save(model, path)
    return path


def row_sum_onnx(folder: Path) -> Path:
    """`total = sum(values)` over a dynamic-length int64 vector per item: items of different lengths."""
    import onnx
    from onnx import TensorProto, helper

    axes = helper.make_tensor("axes_value", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["axes"], value=axes),  # ReduceSum takes its axes as an input
            helper.make_node("ReduceSum", ["values", "axes"], ["total"], keepdims=0),
        ],
        "row_sum",
        [helper.make_tensor_value_info("values", TensorProto.INT64, ["batch", "length"])],
        [helper.make_tensor_value_info("total", TensorProto.INT64, ["batch"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path = folder / "row_sum.onnx"
    onnx.save(model, path)
    return path

"""`sklearn:` and `onnx:` sources: models trained here, served by real `fermion serve` processes, compared with the model in-process."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess

import httpx
import numpy as np
import pytest
from support import FERMION, ROOT, running_server
from tiny_models.tabular import (
    affine_onnx,
    diabetes_onnx,
    diabetes_ridge,
    iris_frame_pipeline,
    iris_onnx,
    row_sum_onnx,
    untrusted_skops,
    wine_forest,
)

from fermion.models._tabular import field_names
from fermion.serving.openapi import build_openapi
from fermion.sources import SourceError, load_service


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("tabular")
    return {
        "iris": iris_frame_pipeline(folder),
        "wine": wine_forest(folder),
        "diabetes": diabetes_ridge(folder),
        "iris_onnx": iris_onnx(folder),
        "diabetes_onnx": diabetes_onnx(folder),
        "folder": folder,
    }


def serve_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`fermion serve ...` expected to fail before it listens."""
    return subprocess.run([*FERMION, "serve", *args, "--port", "0"], capture_output=True, text=True, timeout=60, cwd=ROOT)


def post_all(url: str, path: str, bodies: list[dict]) -> list[httpx.Response]:
    """Send the bodies concurrently, so that the server batches them."""
    with httpx.Client(base_url=url, timeout=30) as http, concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda body: http.post(path, json=body), bodies))


def iris_body(row) -> dict:
    return {
        name: (value if isinstance(value, str) else float(value))
        for name, value in zip(field_names(list(row.index)), row.tolist(), strict=True)
    }


# -- schema and source errors, in-process ------------------------------------------------------


def test_field_names_are_identifiers_and_unique():
    assert field_names(["sepal length (cm)", "age", "class", "2nd", "a-b", "a_b"]) == [
        "sepal_length_cm",
        "age",
        "class_",
        "f_2nd",
        "a_b",
        "a_b_2",
    ]


def test_dataframe_pipeline_schema_has_a_typed_field_per_column(models):
    doc = build_openapi(load_service(f"sklearn:{models['iris'].path}"))
    schemas = doc["components"]["schemas"]
    fields = schemas["PredictRequest"]["properties"]
    assert list(fields) == ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm", "colour"]
    assert fields["sepal_length_cm"]["type"] == "number" and "sepal length (cm)" in fields["sepal_length_cm"]["description"]
    assert 5 < fields["sepal_length_cm"]["examples"][0] < 6.5  # the scaler's mean: an example that makes sense
    assert fields["colour"]["enum"] == ["purple", "white"]
    assert schemas["PredictResponse"]["enum"] == ["setosa", "versicolor", "virginica"]
    probabilities = schemas["ClassProbabilities"]
    assert list(probabilities["properties"]) == ["setosa", "versicolor", "virginica"]
    assert doc["info"]["title"] == "iris" and "Pipeline" in doc["info"]["description"]


def test_columns_are_accepted_under_the_names_the_model_was_trained_with(models):
    service = load_service(f"sklearn:{models['iris'].path}")
    schema = next(ep for ep in service.endpoints() if ep.name == "predict").schema
    python_names = {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}
    trained_names = {"sepal length (cm)": 5.1, "sepal width (cm)": 3.5, "petal length (cm)": 1.4, "petal width (cm)": 0.2}
    for body in (python_names, trained_names):
        values = schema.validate_json(json.dumps({**body, "colour": "white"}).encode())
        assert values == {**python_names, "colour": "white"}
    fields = build_openapi(service)["components"]["schemas"]["PredictRequest"]["properties"]
    assert fields["sepal_length_cm"]["x-aliases"] == ["sepal length (cm)"]
    assert "x-aliases" not in fields["colour"]  # already a Python name: nothing to alias


def test_array_model_takes_a_features_list_of_the_trained_length(models):
    service = load_service(f"sklearn:{models['wine'].path}")
    features = build_openapi(service)["components"]["schemas"]["PredictRequest"]["properties"]["features"]
    assert features["minItems"] == features["maxItems"] == 13 and len(features["examples"][0]) == 13
    # random forests handle missing values, so the schema lets a feature be null (sent to the model as NaN)
    assert features["items"] == {"anyOf": [{"type": "number"}, {"type": "null"}]}
    row = [None, *models["wine"].rows[0][1:].tolist()]
    assert service.call("predict", {"features": [row]}).tolist()[0] in (0, 1, 2)


def test_regressor_has_no_predict_proba(models):
    doc = build_openapi(load_service(f"sklearn:{models['diabetes'].path}"))
    assert "/predict" in doc["paths"] and "/predict_proba" not in doc["paths"]
    assert doc["components"]["schemas"]["PredictResponse"]["type"] == "number"


def test_skops_type_outside_sklearn_is_refused_unless_trusted(models):
    path = untrusted_skops(models["folder"])
    with pytest.raises(SourceError, match=r"numpy\.clip.*--trust-pickle"):
        load_service(f"sklearn:{path}")
    assert load_service(f"sklearn:{path}", {"trust_pickle": True}).model is not None


def test_bad_sklearn_sources_say_what_to_do(models, tmp_path):
    wrong = tmp_path / "model.txt"
    wrong.write_text("not a model")
    with pytest.raises(SourceError, match=r"expected a \.skops file"):
        load_service(f"sklearn:{wrong}")
    broken = tmp_path / "broken.skops"
    broken.write_bytes(b"not a zip")
    with pytest.raises(SourceError, match="not a readable skops file"):
        load_service(f"sklearn:{broken}")
    with pytest.raises(SourceError, match="do not take --task"):
        load_service(f"sklearn:{models['wine'].path}", {"task": "x"})


def test_onnx_with_a_fixed_batch_of_one_runs_item_by_item(tmp_path):
    service = load_service(f"onnx:{affine_onnx(tmp_path, batch=1, name='fixed.onnx')}")
    assert service.mode == "one-by-one"
    answers = service.run_items({"x": [[1, 2, 3, 4], [0, 0, 0, 0]], "shift": [[0, 0, 0], [1, 0, 0]]})
    assert [a["best"] for a in answers] == [2, 0]
    assert np.allclose(answers[1]["scores"], [1.5, -0.25, 0.0])


def test_onnx_items_with_different_dynamic_sizes_run_in_groups(tmp_path):
    service = load_service(f"onnx:{row_sum_onnx(tmp_path)}")
    assert service.mode == "stack"
    assert service.run_items({"values": [[1, 2], [3], [4, 5], [1, 1, 1]]}) == [
        {"total": 3},
        {"total": 3},
        {"total": 9},
        {"total": 3},
    ]


def test_bad_onnx_sources_say_what_to_do(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x00garbage")
    with pytest.raises(SourceError, match="ONNX Runtime cannot load it"):
        load_service(f"onnx:{broken}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match=r"a folder with no \.onnx file"):
        load_service(f"onnx:{empty}")


# -- over HTTP ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_iris_pipeline_served_predicts_like_the_model(models, tmp_path):
    trained = models["iris"]
    bodies = [iris_body(row) for _, row in trained.rows.iterrows()]
    with running_server(f"sklearn:{trained.path}", tmp_dir=tmp_path) as srv:
        labels = post_all(srv.url, "/predict", bodies)
        probabilities = post_all(srv.url, "/predict_proba", bodies)
        with httpx.Client(base_url=srv.url, timeout=30) as http:
            unknown = http.post("/predict", json={**bodies[0], "colour": "green"})
            missing = http.post("/predict", json={k: v for k, v in bodies[0].items() if k != "petal_width_cm"})
            assert "/predict_proba" in http.get("/openapi.json").json()["paths"]
    assert [r.json() for r in labels] == trained.model.predict(trained.rows).tolist()
    expected = trained.model.predict_proba(trained.rows)
    for answer, row in zip(probabilities, expected, strict=True):
        got = answer.json()
        assert list(got) == ["setosa", "versicolor", "virginica"]
        assert np.allclose(list(got.values()), row) and abs(sum(got.values()) - 1) < 1e-6
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["field"] == "colour"
    assert missing.status_code == 422 and missing.json()["detail"][0]["field"] == "petal_width_cm"


@pytest.mark.slow
def test_array_forest_served_with_a_features_list(models, tmp_path):
    trained = models["wine"]
    with running_server(f"sklearn:{trained.path}", tmp_dir=tmp_path) as srv:
        answers = post_all(srv.url, "/predict", [{"features": row.tolist()} for row in trained.rows])
        short = httpx.post(srv.url + "/predict", json={"features": [1.0, 2.0]})
    assert [a.json() for a in answers] == trained.model.predict(trained.rows).tolist()
    assert short.status_code == 422
    assert "features" in short.json()["error"] and "13" in short.json()["error"]


@pytest.mark.slow
def test_pickle_needs_trust_pickle(models, tmp_path):
    trained = models["diabetes"]
    pickled = trained.path.with_suffix(".joblib")
    refused = serve_cli(f"sklearn:{pickled}")
    assert refused.returncode == 2
    message = refused.stderr + refused.stdout
    assert "pickle" in message and "runs any code" in message and "skops" in message and "--trust-pickle" in message
    with running_server(f"sklearn:{pickled}", "--trust-pickle", tmp_dir=tmp_path) as srv:
        answers = post_all(srv.url, "/predict", [{"features": row.tolist()} for row in trained.rows])
        assert httpx.post(srv.url + "/predict_proba", json={"features": [0.0] * 10}).status_code == 404
    # batches of different sizes may add up floats in another order: equal to the last bits or so
    assert [a.json() for a in answers] == pytest.approx(trained.model.predict(trained.rows).tolist(), rel=1e-12)


@pytest.mark.slow
def test_onnx_classifier_answers_label_and_probabilities(models, tmp_path):
    import onnxruntime

    trained = models["iris_onnx"]
    session = onnxruntime.InferenceSession(str(trained.path), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(None, {"X": trained.rows})
    with running_server(f"onnx:{trained.path}", tmp_dir=tmp_path) as srv:
        answers = [a.json() for a in post_all(srv.url, "/predict", [{"X": row.tolist()} for row in trained.rows])]
        wrong = httpx.post(srv.url + "/predict", json={"X": [1.0, 2.0, 3.0]})
        schema = httpx.get(srv.url + "/openapi.json").json()["components"]["schemas"]["PredictRequest"]
    assert [a["output_label"] for a in answers] == labels.tolist()
    for answer, expected in zip(answers, probabilities, strict=True):
        assert answer["output_probability"] == pytest.approx(
            expected, rel=1e-5, abs=1e-6
        )  # float32: batched runs sum in another order
        assert set(answer["output_probability"]) == {"setosa", "versicolor", "virginica"}
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["field"] == "X"
    assert schema["properties"]["X"]["minItems"] == 4 and schema["properties"]["X"]["examples"] == [[0.0] * 4]


@pytest.mark.slow
def test_onnx_regressor_and_hand_written_graph(models, tmp_path):
    import onnxruntime

    trained = models["diabetes_onnx"]
    expected = onnxruntime.InferenceSession(str(trained.path), providers=["CPUExecutionProvider"]).run(None, {"X": trained.rows})[
        0
    ]
    with running_server(f"onnx:{trained.path}", tmp_dir=tmp_path) as srv:
        answers = [a.json() for a in post_all(srv.url, "/predict", [{"X": row.tolist()} for row in trained.rows])]
    # float32 kernels may sum in another order for another batch size: equal to float32 precision
    assert np.allclose([a["variable"] for a in answers], expected, rtol=1e-5)

    graph = affine_onnx(tmp_path)
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    shift = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
    scores, best = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).run(
        None, {"x": x, "shift": shift}
    )
    with running_server(f"onnx:{graph}", tmp_dir=tmp_path) as srv:
        bodies = [{"x": a.tolist(), "shift": b.tolist()} for a, b in zip(x, shift, strict=True)]
        answers = [a.json() for a in post_all(srv.url, "/predict", bodies)]
        doc = httpx.get(srv.url + "/openapi.json").json()
    assert [a["best"] for a in answers] == best.tolist()
    assert np.allclose([a["scores"] for a in answers], scores, rtol=1e-5, atol=1e-6)
    assert set(doc["components"]["schemas"]["PredictRequest"]["properties"]) == {"x", "shift"}
    assert doc["paths"]["/predict"]["post"]["x-fermion"]["batch"]["max_batch_size"] == 64

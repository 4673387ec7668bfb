"""`fermion serve hf:...` for images and audio, on tiny random models built here, called over real HTTP.

Files go both ways a client may send them: multipart uploads and base64 in JSON.
"""

from __future__ import annotations

import base64
import concurrent.futures
import io
import math
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import FERMION, ROOT, RunningServer, running_servers
from tiny_models import audio as tiny_audio
from tiny_models import vision as tiny_vision

pytestmark = pytest.mark.slow

SERVERS = {
    "classifier": tiny_vision.image_classifier,
    "detector": tiny_vision.object_detector,
    "segmenter": tiny_vision.segmenter,
    "speech": tiny_audio.speech_recognizer,
}
PNG = tiny_vision.image_bytes(48, 40, "PNG")
JPEG = tiny_vision.image_bytes(30, 60, "JPEG")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-vision-audio-models")
    return {name: build(root / name) for name, build in SERVERS.items()}


@pytest.fixture(scope="module")
def servers(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningServer]]:
    """Every server, started at once (their model loading overlaps), stopped at once after the module."""
    logs = tmp_path_factory.mktemp("hf-vision-audio-logs")
    sources = {name: (f"hf:{model}",) for name, model in models.items()}
    with running_servers(sources, tmp_dir=logs, env={"OMP_NUM_THREADS": "1"}) as running:
        yield running


def upload(server: RunningServer, path: str, field: str, data: bytes, name: str, **form: str) -> httpx.Response:
    """A multipart upload, as a browser or `curl -F` sends it."""
    return httpx.post(server.url + path, files={field: (name, data)}, data=form, timeout=60)


def as_json(server: RunningServer, path: str, **body: object) -> httpx.Response:
    """A JSON body; bytes are sent base64-encoded."""
    encoded = {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v for k, v in body.items()}
    return httpx.post(server.url + path, json=encoded, timeout=60)


def test_image_classification_from_uploads_and_base64(servers):
    srv = servers["classifier"]
    for response in (upload(srv, "/classify", "image", PNG, "cat.png"), as_json(srv, "/classify", image=JPEG)):
        assert response.status_code == 200, response.text
        labels = response.json()
        assert {item["label"] for item in labels} == set(tiny_vision.CLASSES)
        scores = [item["score"] for item in labels]
        assert scores == sorted(scores, reverse=True) and math.isclose(sum(scores), 1.0, rel_tol=1e-4)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # batched, answered one by one
        answers = list(pool.map(lambda _: as_json(srv, "/classify", image=PNG), range(4)))
    assert all(a.status_code == 200 and len(a.json()) == 3 for a in answers)


def test_bytes_that_are_not_an_image_answer_422(servers):
    response = upload(servers["classifier"], "/classify", "image", b"just some text", "notes.txt")
    assert response.status_code == 422
    assert response.json()["error"].startswith("the file is not an image (notes.txt")
    truncated = as_json(servers["detector"], "/detect", image=PNG[: len(PNG) // 2])
    assert truncated.status_code == 422 and "not an image" in truncated.json()["error"]


def test_image_docs_show_uploads_and_a_real_example_image(servers, models):
    spec = httpx.get(servers["classifier"].url + "/openapi.json").json()
    assert spec["info"]["title"] == f"{models['classifier'].name} (image-classification)"
    assert "cat, dog, bird" in spec["info"]["description"]
    body = spec["paths"]["/classify"]["post"]["requestBody"]["content"]
    assert body["multipart/form-data"]["schema"]["properties"]["image"]["format"] == "binary"
    example = spec["components"]["schemas"]["ClassifyRequest"]["properties"]["image"]["examples"][0]
    assert upload(servers["classifier"], "/classify", "image", base64.b64decode(example), "example.png").status_code == 200


def test_object_detection_boxes_and_threshold(servers):
    srv = servers["detector"]
    response = upload(srv, "/detect", "image", PNG, "street.png", threshold="0")
    assert response.status_code == 200, response.text
    detections = response.json()
    assert detections, "threshold 0 keeps every detection"
    for detection in detections:
        assert detection["label"] in tiny_vision.DETECTION_CLASSES and 0.0 <= detection["score"] <= 1.0
        box = detection["box"]
        assert set(box) == {"xmin", "ymin", "xmax", "ymax"} and all(isinstance(v, int) for v in box.values())
        assert box["xmin"] <= box["xmax"] and box["ymin"] <= box["ymax"]
    assert as_json(srv, "/detect", image=PNG, threshold=1.0).json() == []
    assert as_json(srv, "/detect", image=PNG, threshold=1.5).status_code == 422


def test_segmentation_masks_are_pngs_the_size_of_the_image(servers):
    from PIL import Image

    response = as_json(servers["segmenter"], "/segment", image=JPEG)
    assert response.status_code == 200, response.text
    segments = response.json()
    assert segments and {s["label"] for s in segments} <= set(tiny_vision.SEGMENT_CLASSES)
    for segment in segments:
        assert segment["score"] is None  # semantic segmentation has no per-region score
        mask = Image.open(io.BytesIO(base64.b64decode(segment["mask"])))
        assert mask.format == "PNG" and mask.size == (30, 60) and sum(mask.histogram()[1:255]) == 0


def test_speech_recognition_reads_wav_in_any_layout(servers):
    srv = servers["speech"]
    clips = {
        "16k-mono.wav": tiny_audio.wav_bytes(0.5),
        "44k-stereo-8bit.wav": tiny_audio.wav_bytes(0.3, rate=44_100, channels=2, sample_width=1),
        "float.wav": tiny_audio.float_wav_bytes(),
    }
    for name, data in clips.items():
        response = upload(srv, "/transcribe", "audio", data, name)
        assert response.status_code == 200, (name, response.text)
        assert set(response.json()) == {"text"} and isinstance(response.json()["text"], str)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda data: as_json(srv, "/transcribe", audio=data), clips.values()))
    assert all(a.status_code == 200 for a in answers)
    spec = httpx.get(srv.url + "/openapi.json").json()
    example = spec["components"]["schemas"]["TranscribeRequest"]["properties"]["audio"]["examples"][0]
    assert httpx.post(srv.url + "/transcribe", json={"audio": example}, timeout=60).status_code == 200  # /docs "try it" works


def test_speech_recognition_refuses_what_it_cannot_hear(servers):
    srv = servers["speech"]
    mp3ish = upload(srv, "/transcribe", "audio", b"ID3\x03\x00 not really an mp3", "song.mp3")
    assert mp3ish.status_code == 422 and "send a WAV file" in mp3ish.json()["error"]
    short = upload(srv, "/transcribe", "audio", tiny_audio.wav_bytes(0.01), "click.wav")
    assert short.status_code == 422 and "too short" in short.json()["error"]


def test_cli_refuses_a_vision_model_as_a_text_task(models):
    done = subprocess.run(
        [*FERMION, "serve", f"hf:{models['classifier']}", "--task", "summarization"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert "this model reads images, not text" in done.stderr + done.stdout

"""Where models run: `fermion serve --device` for `hf:` and `st:` sources, and the local backend's GPUs per replica.

This machine has no GPU (CI neither): the errors, the refusals and the environment a replica would get
are tested here with a GPU count given to the code; serving on a real GPU (`hf:` on CUDA, `vllm:`) runs only
where torch sees one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from support import EXAMPLES, FERMION, ROOT, running_platform, running_server

from fermion.models.kinds import SourceError
from fermion.platform.backends.base import ReplicaSpec
from fermion.platform.backends.local import LocalBackend
from fermion.platform.gpus import machine_gpus, pick_gpus
from fermion.sources import load_service


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models.llm import build_tiny_llm

    return build_tiny_llm(tmp_path_factory.mktemp("llm") / "tiny-llm")


def test_a_device_torch_cannot_see_is_a_clear_error_before_anything_loads(model_dir):
    missing = f"cuda:{_cuda_count()}"  # one past the last GPU: cuda:0 here
    with pytest.raises(SourceError, match=rf"--device {missing}, but torch .*sees .*(no CUDA GPU|cuda:0 to)"):
        load_service(f"hf:{model_dir}", {"device": missing})
    with pytest.raises(SourceError, match=rf"st:all-MiniLM-L6-v2: --device {missing}, but torch"):
        load_service("st:all-MiniLM-L6-v2", {"device": missing})
    with pytest.raises(SourceError, match="'tpu' is not a device; use cpu, cuda, cuda:N"):
        load_service(f"hf:{model_dir}", {"device": "tpu"})
    with pytest.raises(SourceError, match="--device apply to model sources"):
        load_service(f"{EXAMPLES / 'echo.py'}", {"device": "cpu"})
    with pytest.raises(SourceError, match="sklearn: sources do not take --device"):
        load_service("sklearn:model.skops", {"device": "cpu"})


def test_the_device_reaches_the_model_service(model_dir):
    assert load_service(f"hf:{model_dir}", {"device": "cpu"}).device == "cpu"
    assert load_service("st:all-MiniLM-L6-v2", {"device": "cpu"}).device == "cpu"
    assert load_service("st:all-MiniLM-L6-v2").device == "cpu"  # the default


@pytest.mark.skipif(_cuda_count() > 0, reason="this machine has a CUDA GPU: the no-GPU error cannot happen here")
def test_serve_device_cuda_without_a_gpu_exits_2_with_one_line(model_dir):
    done = subprocess.run(
        [*FERMION, "serve", f"hf:{model_dir}", "--device", "cuda", "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr
    assert "sees no CUDA GPU here" in errors[0] and "--device cpu" in errors[0]


@pytest.mark.skipif(_cuda_count() == 0, reason="needs a CUDA GPU that torch sees (none on this machine)")
def test_serve_device_cuda_generates_on_the_gpu(model_dir, tmp_path):
    with running_server(f"hf:{model_dir}", "--device", "cuda", tmp_dir=tmp_path, ready_timeout=180) as server:
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}
        answer = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] >= 1


@pytest.mark.skipif(
    _cuda_count() == 0 or importlib.util.find_spec("vllm") is None,
    reason="needs vllm (pip install 'fermion[vllm]') and a CUDA GPU (neither on this machine)",
)
def test_vllm_source_answers_greedy_as_hf_does_through_the_openai_api(model_dir, tmp_path):
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": 0}
    answers = []
    for source in (f"vllm:{model_dir}", f"hf:{model_dir}"):
        with running_server(source, tmp_dir=tmp_path, ready_timeout=600) as server:
            answer = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)
            assert answer.status_code == 200, answer.text
            answers.append(answer.json()["choices"][0]["message"]["content"])
            streamed = httpx.post(server.url + "/v1/chat/completions", json={**body, "stream": True}, timeout=120)
            assert streamed.status_code == 200 and "data: [DONE]" in streamed.text
    assert answers[0] == answers[1]  # greedy on the same weights: the same text (float rounding aside)


def test_the_gpus_replicas_may_use_come_from_cuda_visible_devices_first():
    assert machine_gpus({"CUDA_VISIBLE_DEVICES": "2, 3"}) == ("2", "3")
    assert machine_gpus({"CUDA_VISIBLE_DEVICES": ""}) == ()
    assert machine_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == ()
    assert pick_gpus(2, ("0", "1", "2"), {"0"}) == ["1", "2"]
    assert pick_gpus(0.5, ("0", "1"), set()) == ["0"]  # a fraction still takes a whole GPU on one machine
    with pytest.raises(RuntimeError, match="asks for 2 GPU"):
        pick_gpus(2, ("0", "1"), {"1"})


def _spec(gpus: float, env: dict[str, str] | None = None) -> ReplicaSpec:
    options = {"resources": {"gpus": gpus}} if gpus else {}
    return ReplicaSpec("r1", "chat", 1, "hf:./model", options=options, env=env or {})


def test_each_replica_gets_gpus_no_other_replica_holds(tmp_path):
    backend = LocalBackend(tmp_path, gpus=("0", "1", "2"))
    try:
        assert backend.gpu_env(_spec(2)) == {"CUDA_VISIBLE_DEVICES": "0,1"}
        # a replica being started (no pid yet) holds GPU 0; one whose process has gone held GPU 1
        held = {"replica_id": "a", "deployment": "chat", "revision": 1, "pid": None, "gpus": ["0"]}
        (backend.folder / "a.json").write_text(json.dumps(held))
        gone = {**held, "replica_id": "b", "pid": os.getpid(), "started": -1, "gpus": ["1"]}
        (backend.folder / "b.json").write_text(json.dumps(gone))
        assert backend.gpu_env(_spec(2)) == {"CUDA_VISIBLE_DEVICES": "1,2"}
        with pytest.raises(RuntimeError, match="3 GPU"):
            backend.gpu_env(_spec(3))
        assert backend.gpu_env(_spec(0)) == {"CUDA_VISIBLE_DEVICES": ""}  # asked for none: sees none
        assert backend.gpu_env(_spec(0, {"CUDA_VISIBLE_DEVICES": "2"})) == {}  # the deployment's own env stays
    finally:
        backend.close()
    without = LocalBackend(tmp_path / "no-gpus", gpus=())
    try:
        assert without.gpu_env(_spec(0)) == {}  # no GPUs here: the environment is left alone
    finally:
        without.close()


def test_a_deployment_asking_for_more_gpus_than_the_machine_has_is_refused_before_it_starts(tmp_path):
    with running_platform(tmp_path / "data", env={"CUDA_VISIBLE_DEVICES": ""}) as platform, platform.api() as api:
        body = {"name": "chat", "source": str(EXAMPLES / "echo.py"), "options": {"resources": {"gpus": 1}}}
        answer = api.post("/api/v1/deployments", json=body)
        assert answer.status_code == 422, answer.text
        message = answer.json()["message"]
        assert "asks for 1 GPU(s) and this machine has none" in message and "--gpus" in message
        assert api.get("/api/v1/deployments").json()["deployments"] == []
        assert not list((platform.data_dir / "replicas").glob("*.json"))  # nothing was started

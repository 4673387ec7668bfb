"""The Open Inference Protocol through the platform's gateways: private `onnx:`, `sklearn:` and `st:` deployments,
reached by `tritonclient.http` and KServe's `InferenceRESTClient` at `/run/<deployment>` with an invoke token,
answer as their native endpoints do."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from protocol_clients import MINILM, onnx_calls, sklearn_calls, text_calls, triton_client
from support import GATEWAYS, running_platform, wait_for
from tiny_models.tabular import iris_frame_pipeline, iris_onnx


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_protocol_clients_reach_deployments_through_the_gateway(tmp_path: Path, gateway: str) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    onnx, sklearn = iris_onnx(folder), iris_frame_pipeline(folder)
    with running_platform(tmp_path / "data", "--gateway", gateway) as platform:
        api = platform.api()
        sources = {"flowers": f"onnx:{onnx.path}", "table": f"sklearn:{sklearn.path}", "minilm": f"st:{MINILM}"}
        for name, source in sources.items():
            created = api.post("/api/v1/deployments", json={"name": name, "source": source})
            assert created.status_code == 201, created.text
        token = api.post("/api/v1/tokens", json={"name": "app", "scopes": ["invoke"]}).json()["token"]

        def all_ready() -> bool:
            return all(api.get(f"/api/v1/deployments/{name}").json()["status"] == "ready" for name in sources)

        wait_for(all_ready, timeout=240, what="the three deployments")
        base = f"{platform.url}/run"
        onnx_calls(f"{base}/flowers", onnx.rows[:4], token)
        sklearn_calls(f"{base}/table", sklearn.rows.iloc[:4], token)
        text_calls(f"{base}/minilm", token)

        # Private deployments: without the token a protocol client is told nothing, as for an unknown name.
        hidden = httpx.get(f"{base}/flowers/v2/models/predict")
        assert hidden.status_code == 404 and "Bearer" in hidden.headers["www-authenticate"]
        client = triton_client(f"{base}/flowers")
        try:
            ready = client.is_model_ready("predict", headers={"authorization": f"Bearer {token}"})
            assert ready and not client.is_model_ready("predict")
        finally:
            client.close()

"""The servers compared: how each one is started for each benchmark, and where its endpoint is."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from suite.envs import FERMION_PYTHON, ROOT, ensure_env
from suite.procs import Process, free_port, start

SERVERS = ROOT / "benchmarks" / "servers"
BENCHES = ("echo", "minilm")
#: Packages every peer's versions include: the HTTP stack and, for MiniLM, the model's.
COMMON_PACKAGES = ("pydantic", "uvicorn", "uvloop", "httptools")
MODEL_PACKAGES = ("torch", "sentence-transformers", "transformers")


@dataclass(frozen=True)
class Launch:
    """A started server: its processes (stop them all) and the URL to load."""

    procs: list[Process]
    url: str
    body: bytes
    #: Folders the server wrote that go once it is stopped (Ray's session directory).
    cleanup: tuple[Path, ...] = ()


Launcher = Callable[[str, str, Path], Launch]  # (bench, cpus, log_dir) → Launch


@dataclass(frozen=True)
class Peer:
    """One server in the comparison."""

    name: str
    label: str
    env: str | None  # the suite's virtual environment, None for Fermion's own
    benches: tuple[str, ...]
    launcher: Launcher
    note: str = ""
    packages: tuple[str, ...] = ()

    def packages_for(self, bench: str) -> list[str]:
        """The packages whose versions a result of this peer records."""
        return [*self.packages, *COMMON_PACKAGES, *(MODEL_PACKAGES if bench == "minilm" else ())]

    def python(self, log_dir: Path) -> Path:
        """This peer's interpreter, creating its environment on first use (raises EnvError)."""
        if self.env is None:
            return FERMION_PYTHON
        return ensure_env(self.env, log_dir / f"install-{self.env}.log").python


def body_for(bench: str, *, listed: bool = False) -> bytes:
    """The request body every peer gets for `bench` (BentoML's batchable API takes a list)."""
    from servers._common import SENTENCE

    text: object = "hello world" if bench == "echo" else SENTENCE
    return json.dumps({"text": [text] if listed else text}).encode()


def _script(peer: str, script: str, paths: dict[str, str]) -> Launcher:
    """A peer that is one Python process: `python servers/SCRIPT BENCH --port N`."""

    def launch(bench: str, cpus: str, log_dir: Path) -> Launch:
        python = PEERS_BY_NAME[peer].python(log_dir)
        port = free_port()
        proc = start(
            f"{script}:{bench}",
            [str(python), script, bench, "--port", str(port)],
            cpus=cpus,
            log_path=log_dir / f"{Path(script).stem}-{bench}.log",
            cwd=SERVERS,
        )
        return Launch([proc], f"http://127.0.0.1:{port}{paths[bench]}", body_for(bench))

    return launch


def _fermion(bench: str, cpus: str, log_dir: Path) -> Launch:
    port = free_port()
    source = SERVERS / "fermion_echo.py" if bench == "echo" else ROOT / "examples" / "embeddings.py"
    path = "/echo" if bench == "echo" else "/embed"
    proc = start(
        f"fermion:{bench}",
        [str(FERMION_PYTHON), "-m", "fermion", "serve", str(source), "--port", str(port), "--log-level", "warning"],
        cpus=cpus,
        log_path=log_dir / f"fermion-{bench}.log",
        cwd=ROOT,
        env={"HF_HUB_OFFLINE": "1"},
    )
    return Launch([proc], f"http://127.0.0.1:{port}{path}", body_for(bench))


def _fermion_unbatched(bench: str, cpus: str, log_dir: Path) -> Launch:
    port = free_port()
    source = SERVERS / "fermion_embed_unbatched.py"
    proc = start(
        "fermion-unbatched:minilm",
        [str(FERMION_PYTHON), "-m", "fermion", "serve", str(source), "--port", str(port), "--log-level", "warning"],
        cpus=cpus,
        log_path=log_dir / "fermion-unbatched-minilm.log",
        cwd=ROOT,
        env={"HF_HUB_OFFLINE": "1"},
    )
    return Launch([proc], f"http://127.0.0.1:{port}/embed", body_for(bench))


def _rayserve(bench: str, cpus: str, log_dir: Path) -> Launch:
    python = PEERS_BY_NAME["rayserve"].python(log_dir)
    ray = python.parent / "ray"
    gcs, http = free_port(), free_port()
    ports = {
        flag: str(free_port())
        for flag in (
            "--node-manager-port",
            "--object-manager-port",
            "--ray-client-server-port",
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--runtime-env-agent-port",
            "--metrics-export-port",
        )
    }
    # Ray resolves 127.0.0.1 to the machine's own address unless multi-node clusters are off:
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps every Ray component on loopback.
    env = {
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "PYTHONPATH": str(SERVERS),
        "HF_HUB_OFFLINE": "1",
        "RAY_DEDUP_LOGS": "0",
    }
    temp = Path(os.environ.get("TMPDIR", "/tmp")) / f"fermion-bench-ray-{gcs}"
    head = start(
        "ray head",
        [
            str(ray),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs}",
            "--num-cpus=1",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
            *[f"{k}={v}" for k, v in ports.items()],
        ],
        cpus=cpus,
        log_path=log_dir / f"ray-head-{bench}.log",
        cwd=SERVERS,
        env=env,
    )
    driver = start(
        f"rayserve:{bench}",
        [str(python), "rayserve_app.py", bench, "--port", str(http)],
        cpus=cpus,
        log_path=log_dir / f"rayserve-{bench}.log",
        cwd=SERVERS,
        env={**env, "FERMION_BENCH_RAY_ADDRESS": f"127.0.0.1:{gcs}"},
    )
    path = "/echo" if bench == "echo" else "/embed"
    return Launch([head, driver], f"http://127.0.0.1:{http}{path}", body_for(bench), cleanup=(temp,))


def _bentoml(bench: str, cpus: str, log_dir: Path) -> Launch:
    python = PEERS_BY_NAME["bentoml"].python(log_dir)
    port = free_port()
    service = "bentoml_app:Echo" if bench == "echo" else "bentoml_app:Embed"
    proc = start(
        f"bentoml:{bench}",
        [str(python), "-m", "bentoml", "serve", service, "--host", "127.0.0.1", "--port", str(port)],
        cpus=cpus,
        log_path=log_dir / f"bentoml-{bench}.log",
        cwd=SERVERS,
        env={"BENTOML_DO_NOT_TRACK": "true", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(SERVERS)},
    )
    path = "/echo" if bench == "echo" else "/embed"
    return Launch([proc], f"http://127.0.0.1:{port}{path}", body_for(bench, listed=bench == "minilm"))


PEERS: list[Peer] = [
    Peer(
        "fermion",
        "Fermion",
        None,
        BENCHES,
        _fermion,
        "async def echo; examples/embeddings.py (max_batch_size=32, max_wait_ms=5)",
        ("fermion", "orjson"),
    ),
    Peer(
        "fermion-unbatched",
        "Fermion, batching off",
        None,
        ("minilm",),
        _fermion_unbatched,
        "benchmarks/servers/fermion_embed_unbatched.py: one sentence per model call",
        ("fermion",),
    ),
    Peer(
        "asgi",
        "bare ASGI (limit)",
        "asgi",
        ("echo",),
        _script("asgi", "asgi_app.py", {"echo": "/echo"}),
        "uvicorn + pydantic model_validate_json + orjson, no framework",
        ("orjson",),
    ),
    Peer(
        "fastapi",
        "FastAPI",
        "fastapi",
        BENCHES,
        _script("fastapi", "fastapi_app.py", {"echo": "/echo", "minilm": "/embed"}),
        "pydantic body model; MiniLM in a sync route (thread pool, no batching)",
        ("fastapi", "starlette"),
    ),
    Peer(
        "litserve",
        "LitServe",
        "litserve",
        BENCHES,
        _script("litserve", "litserve_app.py", {"echo": "/echo", "minilm": "/embed"}),
        "one inference worker; MiniLM max_batch_size=32, batch_timeout=0.01",
        ("litserve", "fastapi"),
    ),
    Peer(
        "rayserve",
        "Ray Serve",
        "rayserve",
        BENCHES,
        _rayserve,
        "local head on 127.0.0.1, max_ongoing_requests=100; MiniLM serve.batch 32 / 10 ms",
        ("ray", "starlette"),
    ),
    Peer(
        "bentoml",
        "BentoML",
        "bentoml",
        BENCHES,
        _bentoml,
        "one worker; MiniLM batchable API (adaptive, at most 32), requests send a one-item list",
        ("bentoml",),
    ),
]
PEERS_BY_NAME = {peer.name: peer for peer in PEERS}

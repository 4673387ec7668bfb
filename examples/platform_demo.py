"""What `make run` does: start the platform (`fermion up`) with three demo deployments.

- `echo`: examples/echo.py, public (no token needed);
- `embeddings`: all-MiniLM-L6-v2 sentence embeddings (`st:`), private (needs a token);
- `iris`: a model trained on the platform from the iris sample (a 15-second training job), public.

Deployments that already exist (a second `make run`) are kept, pointed at this checkout's files. Prints the URLs and
the admin token (on a terminal; otherwise where its file is, as `fermion up` does); Ctrl+C (or SIGTERM) stops the platform and its replicas. Settings:
FERMION_PORT (default 8080) and FERMION_HOME (the data dir, default ~/.fermion).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
DEMOS = [
    {"name": "echo", "source": str(HERE / "echo.py"), "public": True},
    {"name": "embeddings", "source": "st:all-MiniLM-L6-v2", "public": False},
]


def main() -> int:
    port = os.environ.get("FERMION_PORT", "8080")
    data_dir = Path(os.environ.get("FERMION_HOME") or Path.home() / ".fermion").expanduser()
    up = subprocess.Popen(
        [sys.executable, "-m", "fermion", "up", "--port", port, "--data-dir", str(data_dir), "--code-from", str(HERE)]
    )

    def forward(signum: int, _frame: object) -> None:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: httpx.get(base + "/healthz", timeout=1).status_code == 200, up, 60, "the platform")
        token = (data_dir / "admin.token").read_text().strip()
        api = httpx.Client(base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=180)
        existing = {d["name"]: d for d in api.get("/api/v1/deployments").json()["deployments"]}
        for demo in DEMOS:
            if demo["name"] not in existing:
                answer = api.post("/api/v1/deployments", json=demo)
            elif existing[demo["name"]]["source"] != demo["source"]:  # e.g. this checkout moved: point it here
                answer = api.patch(f"/api/v1/deployments/{demo['name']}", json={"source": demo["source"]})
            else:
                continue
            if answer.status_code not in (200, 201):
                print(f"could not deploy {demo['name']}: {answer.json().get('message', answer.text)}", file=sys.stderr)
                return _stop(up, 1)
        iris = _trained_iris(api, up)
        if "iris" not in existing:
            answer = api.post("/api/v1/deployments", json={"name": "iris", "source": f"model:{iris}", "public": True})
            if answer.status_code != 201:
                print(f"could not deploy iris: {answer.json().get('message', answer.text)}", file=sys.stderr)
                return _stop(up, 1)
        for demo in [*DEMOS, {"name": "iris"}]:
            print(f"waiting for {demo['name']} to be ready ...", flush=True)
            _wait(
                lambda name=demo["name"]: api.get(f"/api/v1/deployments/{name}").json()["status"] == "ready",
                up,
                300,
                demo["name"],
            )
    except (TimeoutError, RuntimeError, httpx.HTTPError, OSError) as exc:
        print(f"make run failed: {exc}", file=sys.stderr)
        return _stop(up, 1)
    token_file = data_dir / "admin.token"
    # Printed to a terminal only: redirected into a log, the token would stay there.
    shown = token if sys.stdout.isatty() else f"in {token_file} (only you can read it)"
    print(
        f"""
The platform is up, with three deployments:
  echo        {base}/run/echo/docs   (public)
      curl -X POST {base}/run/echo/predict -H 'content-type: application/json' -d '{{"text": "hello"}}'
  embeddings  {base}/run/embeddings/docs   (private: needs a token)
      curl -X POST {base}/run/embeddings/embed -H "authorization: Bearer $(cat {token_file})" -H 'content-type: application/json' -d '{{"text": "hello"}}'
  iris        {base}/run/iris/docs   (public; trained here from sample:iris: see the console's Models page)
      curl -X POST {base}/run/iris/predict -H 'content-type: application/json' -d '{{"sepal_length_cm": 6.1, "sepal_width_cm": 2.8, "petal_length_cm": 4.7, "petal_width_cm": 1.2}}'

  Admin token  {shown}
  Console      {base}/   ·   API docs {base}/api/v1/docs   ·   metrics {base}/metrics
  CLI          fermion ls   ·   fermion status embeddings   ·   fermion logs echo -f
Ctrl+C stops the platform and its replicas.""",
        flush=True,
    )
    return up.wait()


def _trained_iris(api: httpx.Client, up: subprocess.Popen[bytes]) -> str:
    """The registered iris model (trained now through the platform's training API when there is none yet)."""
    found = [m["ref"] for m in api.get("/api/v1/models").json()["models"] if m["name"] == "iris"]
    if found:
        return found[-1]
    print("training iris from sample:iris (a 15 s training job) ...", flush=True)
    api.post("/api/v1/datasets/samples", json={"source": "sample:iris"}).raise_for_status()
    job = api.post("/api/v1/trainings", json={"dataset": "iris", "target": "target", "budget_s": 15, "name": "iris"}).json()
    _wait(
        lambda: api.get(f"/api/v1/trainings/{job['id']}").json()["status"] not in ("queued", "running"),
        up,
        120,
        "the iris training",
    )
    job = api.get(f"/api/v1/trainings/{job['id']}").json()
    if job["status"] != "succeeded":
        raise RuntimeError(f"the iris training {job['status']}: {job['error']}")
    return str(job["model"])


def _wait(condition: object, up: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if up.poll() is not None:
            raise RuntimeError(f"fermion up exited with code {up.returncode}; see its error above")
        try:
            if condition():  # type: ignore[operator]
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{what} was not ready after {timeout:g} s")


def _stop(up: subprocess.Popen[bytes], code: int) -> int:
    if up.poll() is None:
        up.send_signal(signal.SIGTERM)
        up.wait(60)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""Serve every example at once (what `make run` does): echo, streaming, upload and MiniLM embeddings.

Each example is its own `fermion serve` process; Ctrl+C stops them all.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
EXAMPLES = [("echo.py", 8000), ("streaming.py", 8001), ("upload.py", 8002), ("embeddings.py", 8003)]


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # Ctrl+C, or `kill`: stop every example (a shell may start us with SIGINT ignored)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, port in EXAMPLES:
            procs.append(subprocess.Popen([sys.executable, "-m", "fermion", "serve", str(HERE / name), "--port", str(port)]))
        pending = {port for _, port in EXAMPLES}
        deadline = time.monotonic() + 120
        while pending and time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                print("an example failed to start; see its error above", file=sys.stderr)
                return 1
            for port in list(pending):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        pending.discard(port)
                except httpx.TransportError:
                    pass
            time.sleep(0.2)
        if pending:
            print(f"examples on ports {sorted(pending)} were not ready after 120 s", file=sys.stderr)
            return 1
        print("\nAll examples are ready:")
        for name, port in EXAMPLES:
            print(f"  {name:<14} http://127.0.0.1:{port}/docs")
        print("Press Ctrl+C to stop.")
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())

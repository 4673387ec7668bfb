"""Virtual environments for the peers, created and filled by the suite itself.

Each peer gets `benchmarks/.venvs/<name>` with its own packages. A `.pth` file in its
site-packages appends Fermion's site-packages to `sys.path`, so heavy shared packages (torch,
sentence-transformers) are found there instead of being installed again; the peer's own packages
come first on `sys.path` and win. torch is never installed from PyPI (the default wheel is a
multi-GB CUDA build): a peer that needs it sees the CPU build of Fermion's environment, and pip,
which reads the same `sys.path`, treats it as already installed.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import sysconfig
import venv
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENVS = ROOT / "benchmarks" / ".venvs"
FERMION_PYTHON = Path(sys.executable)

#: What each environment installs on top of what it sees through Fermion's environment.
REQUIREMENTS: dict[str, list[str]] = {
    "asgi": ["uvicorn[standard]", "pydantic>=2.7", "orjson"],
    "fastapi": ["fastapi", "uvicorn[standard]"],
    "litserve": ["litserve"],
    "rayserve": ["ray[serve]"],
    "bentoml": ["bentoml"],
    # `transformers serve` (the llm benchmark's peer): transformers and its server come from Fermion's environment
    "hfserve": ["accelerate"],
    "tools": ["matplotlib"],
}
#: Pinned to the version in Fermion's environment: a peer's resolver must never fetch them from PyPI.
FORBIDDEN = ("torch",)


class EnvError(RuntimeError):
    """A peer's environment could not be created or filled; the message says why."""


@dataclass(frozen=True)
class PeerEnv:
    """A ready virtual environment: its Python and the versions of the packages it was built for."""

    name: str
    python: Path


def fermion_site_packages() -> list[str]:
    """Fermion's own site-packages folders (purelib and platlib, usually one folder)."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def _stamp(name: str) -> str:
    text = "\n".join([sys.version, *REQUIREMENTS[name], *fermion_site_packages()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _site_packages(env_dir: Path) -> Path:
    found = sorted(env_dir.glob("lib/python3*/site-packages"))
    if not found:
        raise EnvError(f"no site-packages in {env_dir}")
    return found[0]


def _constraints() -> Path:
    """A pip constraints file pinning torch to the build Fermion's environment has (so pip never downloads one)."""
    from importlib.metadata import PackageNotFoundError, version

    VENVS.mkdir(parents=True, exist_ok=True)
    path = VENVS / "constraints.txt"
    lines = []
    for package in FORBIDDEN:
        try:
            lines.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pass
    path.write_text("\n".join(lines) + "\n")
    return path


def ensure_env(name: str, log: Path, timeout: float = 900.0) -> PeerEnv:
    """Create (once) and return the environment `name`; raises EnvError with the reason on failure."""
    env_dir = VENVS / name
    python = env_dir / "bin" / "python"
    stamp = env_dir / f".installed-{_stamp(name)}"
    if stamp.exists() and python.exists():
        return PeerEnv(name, python)
    log.parent.mkdir(parents=True, exist_ok=True)
    for old in env_dir.glob(".installed-*"):
        old.unlink()
    if not python.exists():
        venv.EnvBuilder(with_pip=True, clear=True, symlinks=True).create(env_dir)
    (_site_packages(env_dir) / "_fermion_shared.pth").write_text("\n".join(fermion_site_packages()) + "\n")
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-c", str(_constraints()), *REQUIREMENTS[name]]
    with open(log, "w") as out:
        try:
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise EnvError(f"pip install {' '.join(REQUIREMENTS[name])} took over {timeout:.0f} s (log: {log})") from exc
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
    if done.returncode != 0:
        raise EnvError(f"pip install {' '.join(REQUIREMENTS[name])} failed: {tail[0][:300]} (log: {log})")
    for banned in FORBIDDEN:
        if list(_site_packages(env_dir).glob(f"{banned}-*.dist-info")):
            raise EnvError(f"{name}'s environment installed its own {banned}; it must use Fermion's (log: {log})")
    stamp.touch()
    return PeerEnv(name, python)


def versions(python: Path, packages: list[str]) -> dict[str, str]:
    """Installed versions of `packages` as `python` sees them (missing ones are left out)."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    import json

    done = subprocess.run([str(python), "-c", code, *packages], capture_output=True, text=True, timeout=60)
    return json.loads(done.stdout) if done.returncode == 0 else {}


if __name__ == "__main__":  # python benchmarks/suite/envs.py NAME...: prepare environments ahead of a run
    for env_name in sys.argv[1:]:
        try:
            print(env_name, ensure_env(env_name, VENVS / f"{env_name}.log").python, flush=True)
        except EnvError as exc:
            print(env_name, "FAILED:", exc, flush=True)

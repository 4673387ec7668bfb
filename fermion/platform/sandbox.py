"""Where replicas (and the API's source check) run: a bubblewrap view that hides the platform.

A replica sees the machine read-only, minus the platform's data dir (database, `admin.token`,
datasets, trainings, other replicas' state and logs): a tmpfs hides it, and only what the replica
needs comes back, its own run folder (port file, HOME, TMPDIR) writable and the model registry's
`models/` read-only. It has its own process namespace (no other process, so no other replica's
`/proc/PID/environ`), and a minimal environment: its deployment's `env`, PATH, LANG, the serving
settings (`FERMION_<SETTING>`), the Hugging Face switches, never `FERMION_DB` or the platform's
secrets. Without bubblewrap the environment is still minimal but the files are not hidden, and
`fermion up` and `GET /api/v1/info` say so. The network is shared: replicas listen on 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fermion.platform.code_folders import CodeFolders

log = logging.getLogger("fermion.platform")

BWRAP = "bwrap"
#: Variables of the platform's environment a replica gets as they are (when set).
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "NO_COLOR", "TZ")
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def _serving_settings() -> frozenset[str]:
    """`FERMION_<SETTING>` variables `fermion serve` reads (ServeConfig's fields): a replica may need them."""
    from fermion.serving.config import ServeConfig

    return frozenset(f"FERMION_{f.name.upper()}" for f in fields(ServeConfig))


def hf_home() -> Path:
    """The Hugging Face cache the platform uses (`$HF_HOME`, else `~/.cache/huggingface`)."""
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser()


@dataclass(frozen=True)
class Sandbox:
    """How this platform runs replicas: in bubblewrap (`bwrap` set) or, said loudly, without it (`missing` says why)."""

    data_dir: Path
    code: CodeFolders = field(default_factory=CodeFolders)
    bwrap: str | None = None
    missing: str = ""

    @classmethod
    def probe(cls, data_dir: str | os.PathLike[str], code_from: Iterable[str | os.PathLike[str]] = ()) -> Sandbox:
        """Find bubblewrap and try it once (a sandbox without it when it is missing or cannot start here);
        `code_from` are the folders sources that run code may come from (ValueError if one is not a folder)."""
        folder = Path(os.path.realpath(data_dir))
        code = CodeFolders.of(code_from, closed=[folder])
        found = shutil.which(BWRAP)
        if found is None:
            return cls(folder, code, missing="install bubblewrap")
        try:
            trial = subprocess.run(
                [found, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid", "--as-pid-1", "true"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return cls(folder, code, missing=f"bubblewrap does not start ({exc})")
        if trial.returncode != 0:
            why = (trial.stderr.strip().splitlines() or [f"exit {trial.returncode}"])[-1]
            return cls(folder, code, missing=f"bubblewrap does not start here ({why})")
        return cls(folder, code, bwrap=found)

    @property
    def description(self) -> str:
        """`bubblewrap`, or `none: <why>` (GET /api/v1/info's "sandbox")."""
        return "bubblewrap" if self.bwrap else f"none: {self.missing}"

    def banner_lines(self, backend: str) -> list[str]:
        """What `fermion up` says about code and replicas' view: which folders may hold code, and the sandbox
        (its absence said loudly)."""
        opened = ", ".join(str(f) for f in self.code.opened) or "none: model sources only (see --code-from)"
        lines = [f"  Code    from {opened}"]
        if backend != "local":
            lines.append(f"  WARNING replicas on the {backend} backend run in no Fermion sandbox")
        elif self.bwrap:
            lines.append("  Sandbox bubblewrap: replicas see no data dir, no other process, no platform secret")
        else:
            lines.append(
                f"  WARNING no sandbox ({self.missing}): replicas can read this data dir, admin.token included; "
                "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap)"
            )
        return lines

    def env(self, own: Mapping[str, str], run_dir: Path) -> dict[str, str]:
        """A replica's whole environment: the platform's few harmless variables, private HOME/TMPDIR, then its own `env`."""
        serving = _serving_settings()
        passed = {k: v for k, v in os.environ.items() if (k in PASSED_ENV or k in serving) and v}
        passed.setdefault("PATH", _DEFAULT_PATH)
        home, tmp = run_dir / "home", run_dir / "tmp"
        private = {"HOME": str(home), "TMPDIR": str(tmp), "HF_HOME": str(hf_home()), "FERMION_HOME": str(self.data_dir)}
        return {**passed, **private, **own, "PYTHONUNBUFFERED": "1", "COLUMNS": "500"}

    def workdir(self, source: str, options: Mapping[str, Any]) -> Path:
        """A Python source runs in the opened folder that holds it (its modules are found there); a model
        source where the platform runs, so that a relative path means what it meant to the deployer."""
        root = self.code.root_of(source, options)
        return root if root is not None else Path.cwd()

    def wrap(self, argv: Sequence[str], run_dir: Path, info_fd: int | None = None) -> list[str]:
        """`argv` inside the sandbox (unchanged without bubblewrap); `run_dir` is created and stays writable.
        Nothing of the data dir but the model registry comes back, whatever path a source names."""
        for sub in ("home", "tmp"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        if not self.bwrap:
            return list(argv)
        command = [self.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid", "--as-pid-1"]
        if info_fd is not None:
            command += ["--info-fd", str(info_fd)]
        hidden = [self.data_dir]
        default_home = Path.home() / ".fermion"  # another platform's data dir, when this one is elsewhere
        if default_home.is_dir() and os.path.realpath(default_home) != str(self.data_dir):
            hidden.append(Path(os.path.realpath(default_home)))
        for folder in hidden:
            command += ["--tmpfs", str(folder)]
        shown: list[tuple[str, Path]] = [("--bind", Path(os.path.realpath(run_dir)))]
        registry = self.data_dir / "models"
        if registry.is_dir():
            shown.append(("--ro-bind", registry))
        cache = hf_home()
        if cache.is_dir():
            shown.append(("--bind", Path(os.path.realpath(cache))))
        for how, path in sorted(shown, key=lambda item: len(item[1].parts)):  # parents before children
            command += [how, str(path), str(path)]
        return [*command, "--", *argv]

    def redact(self, message: str) -> str:
        """An error text without the data dir or the control plane's folder (the API answers it to callers)."""
        for path, name in ((str(self.data_dir), "<data dir>"), (os.getcwd(), "<platform folder>")):
            if path not in ("/", "") and not any(str(folder).startswith(path) for folder in self.code.opened):
                message = message.replace(path, name)
        return message


def sandboxed_pid(info: int) -> int | None:
    """The host pid of the sandboxed process, read from bubblewrap's --info-fd pipe (None if it did not start)."""
    import json

    chunks = []
    with os.fdopen(info, "rb") as pipe:
        while chunk := pipe.read(4096):
            chunks.append(chunk)
            if b"}" in chunk:
                break
    try:
        return int(json.loads(b"".join(chunks))["child-pid"])
    except (ValueError, KeyError, TypeError):
        return None


def catches(pid: int, signum: int) -> bool:
    """Whether process `pid` handles `signum`: a sandboxed replica is its namespace's pid 1, which the kernel
    spares every signal it does not handle (so before its handlers are installed, only SIGKILL stops it)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError):
        pass
    return False

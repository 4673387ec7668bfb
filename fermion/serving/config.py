"""Settings of one replica: limits, timeouts, threads, TLS. Every field but the TLS files can come from a `FERMION_*` variable."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from typing import Any


def cpu_count() -> int:
    """CPUs this process may run on (respects taskset/cgroup affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


#: Settings never read from the environment: the platform's replicas inherit its environment and must
#: speak plain HTTP to its gateway, even when `fermion up` itself serves TLS.
COMMAND_LINE_ONLY = ("tls_cert", "tls_key")


@dataclass
class ServeConfig:
    """How a replica serves its Service. Defaults suit one model on a small machine."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    #: Largest request body accepted, in bytes; larger bodies get 413 and are not read.
    max_body_size: int = 16 * 1024 * 1024
    #: Default per-endpoint timeout in seconds (504 after it); `@endpoint(timeout=...)` overrides.
    timeout: float = 60.0
    #: Default requests running at once per endpoint; `None`: `threads` for sync code, 256 for async.
    max_concurrency: int | None = None
    #: Default requests waiting per endpoint beyond those running; when full, 429.
    max_queue: int = 512
    #: Threads that run blocking (sync) endpoint code, per worker.
    threads: int = 8
    #: Threads for torch/BLAS per worker; `None`: cores ÷ workers, at least 1.
    compute_threads: int | None = None
    #: Seconds in-flight requests get to finish after SIGTERM.
    graceful_timeout: float = 30.0
    #: Seconds a replica keeps serving after SIGTERM, its /readyz answering 503 "draining", before it
    #: stops taking requests: time for a load balancer in front to take it out of rotation (SIGINT
    #: skips it). `fermion up` sets it for its replicas; alone, `fermion serve` stops at once.
    drain_delay: float = 0.0
    log_level: str = "info"
    access_log: bool = False
    #: PEM certificate (chain) and its private key: set both to serve HTTPS instead of HTTP.
    tls_cert: str | None = None
    tls_key: str | None = None

    @classmethod
    def from_env(cls, **overrides: Any) -> ServeConfig:
        """Defaults, then `FERMION_<FIELD>` variables, then explicit (non-None) overrides."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in COMMAND_LINE_ONLY:
                continue
            raw = os.environ.get(f"FERMION_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, str(f.type), raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Reject values that cannot work, naming the setting."""
        checks = [
            ("workers", self.workers >= 1),
            ("max_body_size", self.max_body_size >= 1),
            ("timeout", self.timeout > 0),
            ("max_queue", self.max_queue >= 0),
            ("threads", self.threads >= 1),
            ("graceful_timeout", self.graceful_timeout >= 0),
            ("drain_delay", 0 <= self.drain_delay <= 600),
            ("port", 0 <= self.port <= 65535),
            ("max_concurrency", self.max_concurrency is None or self.max_concurrency >= 1),
            ("compute_threads", self.compute_threads is None or self.compute_threads >= 1),
        ]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"invalid {name}={getattr(self, name)!r}")

    def effective_compute_threads(self) -> int:
        """Torch/BLAS threads for each worker so that workers × threads ≤ cores."""
        if self.compute_threads is not None:
            return self.compute_threads
        return max(1, cpu_count() // self.workers)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "ki": 1024,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gi": 1024**3,
    "gib": 1024**3,
}


def parse_size(text: str) -> int:
    """`16MiB`, `10MB`, `1048576` → bytes."""
    match = _SIZE.match(text)
    unit = (match.group(2) or "").lower() if match else ""
    if not match or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size; write bytes or a number with a unit, like 16MiB or 10MB")
    return int(float(match.group(1)) * _UNITS[unit])


def _parse(name: str, type_name: str, raw: str) -> Any:
    if name == "max_body_size":
        return parse_size(raw)
    try:
        if "bool" in type_name:
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if "int" in type_name:
            return int(raw)
        if "float" in type_name:
            return float(raw)
    except ValueError:
        raise ValueError(f"FERMION_{name.upper()}={raw!r} is not a valid {type_name}") from None
    return raw

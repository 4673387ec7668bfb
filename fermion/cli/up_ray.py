"""`fermion up --backend ray`: connect to a Ray cluster's dashboard, or start a head on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fermion.cli.app import err, fail

if TYPE_CHECKING:
    from fermion.platform.backends.ray import RayBackend
    from fermion.platform.backends.ray_head import RayHead


def ray_backend(folder: Path, address: str | None, serve_port: int | None, grace: float) -> tuple[RayBackend, RayHead | None]:
    """The Ray backend for `fermion up`, and the head it started (None when given a cluster's address)."""
    from fermion.platform.backends.ray import RayBackend, RayUnavailable
    from fermion.platform.backends.ray_head import RayHead, RayHeadError, free_port

    head = None
    if not address:
        head = RayHead.adopt(folder / "ray")  # an earlier `fermion up` of this data dir was killed: its head runs on
        if head is None:
            head = RayHead(folder / "ray")
            try:
                with err.status("starting a Ray head on this machine (pass --ray-address to use a cluster)…"):
                    head.start()
            except RayHeadError as exc:
                fail(f"could not start a Ray head: {exc}", 2)
        address = head.dashboard_url
    backend = RayBackend(address, folder, http_port=serve_port or (free_port() if head is not None else 8000), grace=grace)
    try:
        backend.connect()
    except RayUnavailable as exc:
        if head is not None:
            head.stop()
        fail(str(exc), 2)
    return backend, head

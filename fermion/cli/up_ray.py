"""`fermion up --backend ray`: connect to a Ray cluster's dashboard, or start a head on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fermion.cli.app import err, fail

if TYPE_CHECKING:
    from fermion.platform.backends.ray import RayBackend
    from fermion.platform.backends.ray_head import RayHead

RayAddressOption = Annotated[
    str | None,
    typer.Option(
        help="--backend ray: the cluster's dashboard, e.g. http://head:8265 (as `ray job submit` takes it; its token "
        "too: $RAY_AUTH_TOKEN_PATH, $RAY_AUTH_TOKEN or ~/.ray/auth_token). "
        "[default: $FERMION_RAY_ADDRESS, else a Ray head started here and stopped with the platform]",
        show_default=False,
    ),
]
RayServePortOption = Annotated[
    int | None,
    typer.Option(
        help="--backend ray: the port of Serve's HTTP proxy when Serve is not running yet. "
        "[default: 8000 on a given cluster, a free port on a head started here]",
        show_default=False,
    ),
]
RayServeHostOption = Annotated[
    str | None,
    typer.Option(
        help="--backend ray: the address Serve's HTTP proxy listens on when Serve is not running yet; it answers "
        "without Fermion's tokens, so keep it closed to all but this gateway (docs/security.md). [default: 127.0.0.1]",
        show_default=False,
    ),
]
RaySecretsDirOption = Annotated[
    Path | None,
    typer.Option(
        help="--backend ray: the folder for the keys that seal deployments' env, mounted at the same path on every "
        "node of the cluster. [default: <data dir>/ray/keys, which only nodes on this machine read]",
        show_default=False,
    ),
]


def ray_backend(
    folder: Path,
    address: str | None,
    serve_port: int | None,
    grace: float,
    serve_host: str | None = None,
    secrets_dir: Path | None = None,
) -> tuple[RayBackend, RayHead | None]:
    """The Ray backend for `fermion up`, and the head it started (None when given a cluster's address)."""
    from fermion.platform.backends.ray import RayBackend, RayUnavailable
    from fermion.platform.backends.ray_auth import token_from_environment
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
        address, token = head.dashboard_url, head.token
    else:
        try:
            token = token_from_environment()
        except ValueError as exc:
            fail(str(exc), 2)
    backend = RayBackend(
        address,
        folder,
        http_port=serve_port or (free_port() if head is not None else 8000),
        grace=grace,
        token=token,
        serve_host=serve_host,
        secrets_dir=secrets_dir,
    )
    try:
        backend.connect()
    except RayUnavailable as exc:
        if head is not None:
            head.stop()
        fail(str(exc), 2)
    return backend, head

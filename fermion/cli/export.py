"""`fermion export kuberay NAME`: a deployment as a KubeRay RayService manifest."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fermion.cli.app import app, err, fail, out
from fermion.cli.platform import CaCertOption, TokenOption, UrlOption, connect

if TYPE_CHECKING:
    from fermion.platform.backends.kuberay import ExportRequest

export_app = typer.Typer(help="Write a deployment out for another system to run (KubeRay on Kubernetes).", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command()
def kuberay(
    name: Annotated[str, typer.Argument(help="The deployment to export.", show_default=False)],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the YAML here. [default: standard output]", show_default=False)
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(help="The pods' image. [default: rayproject/ray:<this Ray version>-py<this Python>]", show_default=False),
    ] = None,
    pip: Annotated[
        list[str] | None,
        typer.Option(
            help="A pip requirement the cluster installs (repeat it). [default: fermion[EXTRA]==<this version>]",
            show_default=False,
        ),
    ] = None,
    no_pip: Annotated[bool, typer.Option("--no-pip", help="Install nothing: the image already has Fermion.")] = False,
    working_dir: Annotated[
        str | None,
        typer.Option(help="A zip URI (https://, s3://, gs://) of the folder a py: source's file is in.", show_default=False),
    ] = None,
    namespace: Annotated[str | None, typer.Option(help="The Kubernetes namespace.", show_default=False)] = None,
    with_secret: Annotated[
        Path | None,
        typer.Option(
            help="Also write the Secret fermion-NAME that the pods read the deployment's env from, to this file (0600), "
            "with each value taken from this shell's variable of the same name (the platform never shows them).",
            show_default=False,
        ),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    ca_cert: CaCertOption = None,
) -> None:
    """Write deployment NAME as a KubeRay RayService: the same Serve application the Ray backend runs."""
    from fermion.platform.backends.kuberay import ExportRequest, rayservice, to_yaml

    with connect(url, token) as platform:
        deployment = platform.deployments.get(name)
    notes: list[str] = []
    request = ExportRequest(
        name=deployment.name,
        source=deployment.source,
        options=dict(deployment.options),
        min_replicas=deployment.min_replicas,
        max_replicas=deployment.max_replicas,
        target_in_flight=deployment.target_in_flight,
        env_names=tuple(sorted(deployment.env)),
        image=image,
        pip=() if no_pip else (tuple(pip) if pip else None),
        working_dir=working_dir,
        namespace=namespace,
        max_ongoing_requests=_ongoing_limit(deployment.source, deployment.options, notes),
        notes=notes,
    )
    secret = _secret_text(request, with_secret) if with_secret is not None else None
    manifest, notes = rayservice(request)
    text = to_yaml(manifest)
    if output is None:
        sys.stdout.write(text)
    else:
        try:
            output.write_text(text)
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror or exc}", 2)
        out.print(f"wrote the RayService {name} to {output}; apply it with: kubectl apply -f {output}", markup=False)
    if with_secret is not None and secret is not None:
        from fermion.platform.home import write_private

        try:
            write_private(with_secret, secret)
        except OSError as exc:
            fail(f"cannot write {with_secret}: {exc.strerror or exc}", 2)
        out.print(f"wrote the Secret fermion-{name} to {with_secret} (mode 0600); apply it first", markup=False)
        notes = [note for note in notes if "kubectl create secret" not in note]
    for note in notes:
        err.print(f"note: {note}", markup=False, highlight=False)


def _secret_text(request: ExportRequest, path: Path) -> str:
    """The Secret's YAML, its values from this shell's environment; fails naming what is missing."""
    from fermion.platform.backends.kuberay import secret_manifest, to_yaml

    if not request.env_names:
        fail(f"deployment {request.name} has no env: there is no Secret to write to {path}; leave out --with-secret", 2)
    missing = [key for key in request.env_names if key not in os.environ]
    if missing:
        fail(
            f"--with-secret takes each value from this shell's variable of the same name (the platform never shows them); "
            f"set {', '.join(missing)}, e.g. {missing[0]}=... fermion export kuberay {request.name} --with-secret {path}",
            2,
        )
    return to_yaml(secret_manifest(request, {key: os.environ[key] for key in request.env_names}))


def _ongoing_limit(source: str, options: dict, notes: list[str]) -> int | None:
    """Serve's max_ongoing_requests from the service's own limits, if the source loads here."""
    from fermion.platform.resources import source_options
    from fermion.serving.config import ServeConfig
    from fermion.serving.on_ray import ongoing_limit
    from fermion.sources import SourceError, load_service

    try:
        return ongoing_limit(load_service(source, source_options(options)), ServeConfig())
    except (SourceError, ImportError, OSError) as exc:
        notes.append(f"the source does not load here ({exc}); Serve computes max_ongoing_requests when it deploys")
        return None

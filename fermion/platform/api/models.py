"""/models: the registry of trained model versions and their evaluation reports (docs/platform-api.md, "Build").

The registry lives in the platform's data dir (`models/`), the folder `fermion models` reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response

from fermion.platform.api.common import PREFIX, Deployer
from fermion.platform.errors import NotFound

if TYPE_CHECKING:
    from fermion.platform.controlplane import ControlPlane


def register(api: FastAPI, plane: ControlPlane) -> None:
    """Add /models to the API."""
    from fermion.train import ModelRegistry, TrainingError

    registry = ModelRegistry(plane.data_dir / "models")

    def model_or_404(ref: str) -> Any:
        try:
            return registry.get(ref)
        except TrainingError as exc:
            raise NotFound(exc.message) from None

    @api.get(f"{PREFIX}/models", tags=["models"])
    def list_models(_who: Deployer) -> dict[str, Any]:
        """Every registered model version with its dataset, task, family and test metrics."""
        return {"models": [v.summary() for v in registry.list()]}

    @api.get(f"{PREFIX}/models/{{ref}}", tags=["models"])
    def get_model(ref: str, _who: Deployer) -> dict[str, Any]:
        """Everything about NAME or NAME@V: metrics, parameters, inputs, trials, confusion matrix, importance, libraries."""
        version = model_or_404(ref)
        return {
            **version.manifest,
            "ref": version.ref,
            "source": version.source,
            "report_url": f"{PREFIX}/models/{version.ref}/report",
        }

    # Only the 200 is HTML: the errors are JSON like everywhere else (response_class=HTMLResponse would document them as HTML).
    report_ok = {200: {"description": "The report page", "content": {"text/html": {"schema": {"type": "string"}}}}}

    @api.get(f"{PREFIX}/models/{{ref}}/report", tags=["models"], response_class=Response, responses=report_ok)
    def model_report(ref: str, _who: Deployer) -> FileResponse:
        """The evaluation report, one self-contained HTML page."""
        return FileResponse(model_or_404(ref).report_file, media_type="text/html; charset=utf-8")

    @api.get(f"{PREFIX}/models/{{ref}}/plots/{{plot}}", tags=["models"])
    def model_plot(ref: str, plot: str, _who: Deployer) -> FileResponse:
        """One of the report's plots as PNG (search.png, confusion.png, importance.png, predictions.png)."""
        version = model_or_404(ref)
        if plot not in version.manifest.get("plots", []):
            raise NotFound(
                f"{version.ref} has no plot {plot!r}; it has: {', '.join(version.manifest.get('plots', [])) or 'none'}"
            )
        return FileResponse(version.path / "plots" / plot, media_type="image/png")

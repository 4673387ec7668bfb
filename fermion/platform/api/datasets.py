"""/datasets: stored, versioned tables and image sets (docs/platform-api.md, "Build").

They live in the platform's data dir (`datasets/`), the folder the CLI's `fermion data` uses.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from fermion.platform.api.common import PREFIX, Deployer
from fermion.platform.errors import Invalid, NotFound

if TYPE_CHECKING:
    from fermion.data import DatasetStore
    from fermion.platform.controlplane import ControlPlane


class DatasetSample(BaseModel):
    """Add a bundled sample (no upload): `{"source": "sample:iris"}`."""

    model_config = ConfigDict(extra="forbid")
    source: str = Field(
        description="sample:iris, sample:wine, sample:breast_cancer, sample:digits or sample:diabetes.",
        examples=["sample:iris"],
        json_schema_extra={"pattern": "^sample:"},  # documented; the API names the samples when one is unknown
    )
    name: str | None = Field(default=None, description="Dataset name (default: the sample's name).")


def dataset_store(plane: ControlPlane) -> DatasetStore:
    """The platform's datasets (under its data dir)."""
    from fermion.data import DatasetStore

    return DatasetStore(plane.data_dir / "datasets")


def dataset_or_404(datasets: DatasetStore, ref: str) -> Any:
    """The version NAME or NAME@V names; NotFound (404) saying what exists."""
    from fermion.data import DatasetError

    try:
        return datasets.get(ref)
    except DatasetError as exc:
        raise NotFound(exc.message) from None


def register(api: FastAPI, plane: ControlPlane) -> None:
    """Add /datasets to the API."""
    from fermion.data import DatasetError

    datasets = dataset_store(plane)

    @api.get(f"{PREFIX}/datasets", tags=["datasets"])
    def list_datasets(_who: Deployer) -> dict[str, Any]:
        """Every dataset version, oldest first per name."""
        return {"datasets": [v.summary() for v in datasets.list()]}

    existing = {200: {"description": "The same content was added before: that version"}}

    @api.post(f"{PREFIX}/datasets", status_code=201, tags=["datasets"], responses=existing)
    def add_dataset_upload(
        who: Deployer,
        file: Annotated[
            UploadFile, File(description="A .csv, .jsonl, .parquet file, or a .zip of image folders (one per label).")
        ],
        name: Annotated[str | None, Form(description="Dataset name (default: from the file name).")] = None,
    ) -> JSONResponse:
        """Upload a file as a new dataset version (the same content again returns the existing version, 200)."""
        filename = Path(file.filename or "upload").name
        with tempfile.TemporaryDirectory(prefix="upload-", dir=_staging(datasets.root)) as folder:
            path = Path(folder) / filename
            with open(path, "wb") as target:
                shutil.copyfileobj(file.file, target, 1 << 20)
            return add(path, name, who.name, filename)

    @api.post(f"{PREFIX}/datasets/samples", status_code=201, tags=["datasets"], responses=existing)
    def add_dataset_sample(body: DatasetSample, who: Deployer) -> JSONResponse:
        """Add one of the bundled offline samples as a dataset version."""
        if not body.source.startswith("sample:"):
            raise Invalid(f"source {body.source!r} is not a sample; upload files with multipart POST {PREFIX}/datasets")
        return add(body.source, body.name, who.name, body.source)

    def add(source: Any, name: str | None, actor: str, label: str) -> JSONResponse:
        before = {v.ref for v in datasets.list()}
        try:
            version = datasets.add(source, name=name)
        except DatasetError as exc:
            raise Invalid(exc.message.replace(str(source), label) if label != str(source) else exc.message) from None
        created = version.ref not in before
        if created:
            plane.store.audit(actor, "dataset.add", version.ref, {"source": label, "rows": version.rows})
        described = datasets.describe(version)
        described.pop("path", None)  # the server's file system is not the caller's business
        return JSONResponse({**described, "created": created}, status_code=201 if created else 200)

    @api.get(f"{PREFIX}/datasets/{{ref}}", tags=["datasets"])
    def get_dataset(ref: str, _who: Deployer) -> dict[str, Any]:
        """Schema, rows, missing values, label balance and the first rows of NAME or NAME@V."""
        version = dataset_or_404(datasets, ref)
        described = datasets.describe(version)
        described.pop("path", None)
        return described


def _staging(root: Path) -> Path:
    folder = root / ".staging"
    folder.mkdir(parents=True, exist_ok=True)
    return folder

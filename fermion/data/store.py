"""Datasets as immutable versions on disk: root/NAME/V/ with the data and a manifest.json.

A version is staged in root/.staging/, its manifest written last, and the whole folder renamed into
place in one step, so a failed or interrupted add leaves no version behind (only staging litter).
Versions are addressed by content hash: adding the same content under the same name again returns
the version already there.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fermion.data.ingest import (
    SAMPLES,
    SUPPORTED,
    TABLE_FILES,
    TABLE_FORMATS,
    DatasetError,
    build_sample,
    copy_images,
    copy_normalized,
    extract_zip,
    folder_size,
    human_bytes,
    image_tree,
    read_table,
    remove_tree,
    table_stats,
)
from fermion.home import default_data_dir
from fermion.versioned import NAME_RULE, pick_version, publish, read_manifests, version_numbers

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_MAX_BYTES = 1 << 30
PREVIEW_ROWS = 5


@dataclass(frozen=True)
class DatasetVersion:
    """One immutable version of a dataset, as its manifest describes it."""

    name: str
    version: int
    hash: str
    kind: str  # "table" or "images"
    format: str  # "csv", "jsonl", "parquet" or "images"
    rows: int
    columns: list[dict[str, Any]]
    labels: dict[str, int] | None
    created_at: str
    source: str
    path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """`NAME@V`, the way commands and training name this version."""
        return f"{self.name}@{self.version}"

    def summary(self) -> dict[str, Any]:
        """What a listing shows of this version, JSON-ready: no preview, no paths of this machine."""
        return {
            "ref": self.ref,
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "format": self.format,
            "rows": self.rows,
            "columns": [c["name"] for c in self.columns],
            "label_column": self.extra.get("label_column"),
            "labels": self.labels,
            "hash": self.hash,
            "created_at": self.created_at,
            "source": self.source,
        }

    @property
    def data_path(self) -> Path:
        """The table file, or the folder that holds the label folders."""
        return self.path / (TABLE_FILES[self.format] if self.kind == "table" else "images")

    @classmethod
    def from_manifest(cls, path: Path, manifest: dict[str, Any]) -> DatasetVersion:
        known = {"name", "version", "hash", "kind", "format", "rows", "columns", "labels", "created_at", "source"}
        return cls(
            name=manifest["name"],
            version=int(manifest["version"]),
            hash=manifest["hash"],
            kind=manifest["kind"],
            format=manifest["format"],
            rows=int(manifest["rows"]),
            columns=list(manifest["columns"]),
            labels=manifest.get("labels"),
            created_at=manifest["created_at"],
            source=manifest.get("source", ""),
            path=path,
            extra={k: v for k, v in manifest.items() if k not in known},
        )


def sanitize_name(stem: str) -> str:
    """A valid dataset name made from a file or folder stem ('My Data_2024' -> 'my-data-2024')."""
    name = re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if not name:
        return "dataset"
    if not name[0].isalpha():
        name = f"d-{name}"
    return name[:63].rstrip("-")


def check_name(name: str) -> str:
    if not NAME_RULE.match(name):
        raise DatasetError(
            f"invalid dataset name {name!r}: use 1-63 lowercase letters, digits and '-', starting with a letter (e.g. 'iris-2')"
        )
    return name


class DatasetStore:
    """Versioned datasets under `root` (default: the data dir's `datasets/`)."""

    def __init__(self, root: Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if root is None:
            root = default_data_dir() / "datasets"
        self.root = Path(root)
        self.max_bytes = max_bytes

    # -- adding ----------------------------------------------------------------------------------

    def add(self, source: str | Path, name: str | None = None) -> DatasetVersion:
        """Validate `source` and store it as the next version of `name`, or return the identical version already there."""
        if name is not None:
            check_name(name)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / ".staging"
        staging.mkdir(exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="add-", dir=staging))
        try:
            text = str(source)
            if text.startswith("sample:"):
                sample = text.removeprefix("sample:")
                made = build_sample(sample, work / "sample")
                return self._add_path(made, name or sanitize_name(sample), work, label=text)
            path = Path(source).expanduser()
            if not path.exists():
                raise DatasetError(
                    f"no file or folder named {text!r}; give a CSV, JSONL or Parquet file, an image folder or zip, or sample:NAME"
                )
            return self._add_path(path, name or sanitize_name(path.stem if path.is_file() else path.name), work, label=path.name)
        finally:
            remove_tree(work)

    def _add_path(self, path: Path, name: str, work: Path, label: str) -> DatasetVersion:
        check_name(name)
        stage = work / "version"
        stage.mkdir(parents=True)
        if path.is_dir():
            size = folder_size(path)
            self._check_size(label, size)
            fmt, kind = "images", "images"
            digest, stats = copy_images(image_tree(path, path.name), stage / "images")
        else:
            size = path.stat().st_size
            self._check_size(label, size)
            suffix = path.suffix.lower()
            if suffix == ".zip":
                root = extract_zip(path, work / "unzipped", self.max_bytes)
                fmt, kind = "images", "images"
                digest, stats = copy_images(image_tree(root, path.stem), stage / "images")
            elif suffix in TABLE_FORMATS:
                fmt, kind = TABLE_FORMATS[suffix], "table"
                target = stage / TABLE_FILES[fmt]
                digest = copy_normalized(path, target, text=fmt != "parquet")
                frame = read_table(target, fmt, label=path.name)
                if frame.empty and not len(frame.columns):
                    raise DatasetError(f"{path.name} has no data; give a file with a header and at least one row")
                if not len(frame):
                    raise DatasetError(f"{path.name} has columns but no rows; add at least one row")
                stats = table_stats(frame)
            else:
                raise DatasetError(f"unknown format {suffix or '(no extension)'!r} for {path.name}; supported: {SUPPORTED}")
        existing = self._find_hash(name, digest)
        if existing is not None:
            return existing
        manifest = {
            "name": name,
            "hash": digest,
            "kind": kind,
            "format": fmt,
            "rows": stats["rows"],
            "columns": stats["columns"],
            "label_column": stats["label_column"],
            "labels": stats["labels"],
            "bytes": size,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": label,
        }
        if "image_formats" in stats:
            manifest["image_formats"] = stats["image_formats"]
        return self._publish(stage, manifest)

    def _check_size(self, label: str, size: int) -> None:
        if size == 0:
            raise DatasetError(f"{label} is empty; give a file or folder with data in it")
        if size > self.max_bytes:
            raise DatasetError(
                f"{label} is {human_bytes(size)}, over the limit of {human_bytes(self.max_bytes)}; split it or raise the limit"
            )

    def _publish(self, stage: Path, manifest: dict[str, Any]) -> DatasetVersion:
        """Write the manifest last, then rename the staged folder to the next free version number."""
        return DatasetVersion.from_manifest(publish(self.root / manifest["name"], stage, manifest), manifest)

    def _find_hash(self, name: str, digest: str) -> DatasetVersion | None:
        return next((v for v in self.versions(name) if v.hash == digest), None)

    # -- reading ---------------------------------------------------------------------------------

    def _version_numbers(self, name: str) -> list[int]:
        return version_numbers(self.root / name)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and NAME_RULE.match(p.name) and self.versions(p.name))

    def versions(self, name: str) -> list[DatasetVersion]:
        """Every published version of `name`, oldest first (folders without a manifest are not versions)."""
        found = []
        for path, manifest in read_manifests(self.root / name):
            try:
                found.append(DatasetVersion.from_manifest(path, manifest))
            except (ValueError, KeyError):
                continue
        return found

    def list(self) -> list[DatasetVersion]:
        """All versions of all datasets, by name then version."""
        return [v for name in self.names() for v in self.versions(name)]

    def get(self, ref: str | DatasetVersion) -> DatasetVersion:
        """`NAME@V`, or `NAME` for its latest version; unknown names get a did-you-mean."""
        if isinstance(ref, DatasetVersion):
            return ref
        return pick_version(ref, self.versions, self.names, "dataset", "add one with `fermion data add FILE`", DatasetError)

    def load_table(self, ref: str | DatasetVersion) -> pd.DataFrame:
        """The table of a table dataset, as a pandas DataFrame."""
        version = self.get(ref)
        if version.kind != "table":
            raise DatasetError(f"{version.ref} is an image set, not a table; use image_files() for its images")
        return read_table(version.data_path, version.format, label=version.ref)

    def image_files(self, ref: str | DatasetVersion) -> list[tuple[Path, str]]:
        """(file, label) for every image of an image dataset, sorted by path."""
        version = self.get(ref)
        if version.kind != "images":
            raise DatasetError(f"{version.ref} is a table, not an image set; use load_table() for it")
        root = version.data_path
        return [(p, p.relative_to(root).parts[0]) for p in sorted(root.rglob("*")) if p.is_file()]

    def describe(self, ref: str | DatasetVersion) -> dict[str, Any]:
        """Schema, row count, missing values, label balance and a preview of the first rows, JSON-ready."""
        version = self.get(ref)
        if version.kind == "table":
            frame = self.load_table(version)
            head = frame.head(PREVIEW_ROWS)
            preview = json.loads(head.to_json(orient="records", date_format="iso"))
        else:
            root = version.data_path
            preview = [
                {"image": str(p.relative_to(root).as_posix()), "label": label}
                for p, label in self.image_files(version)[:PREVIEW_ROWS]
            ]
        labels = version.labels
        total = sum(labels.values()) if labels else 0
        balance = {k: {"count": n, "share": round(n / total, 4)} for k, n in labels.items()} if labels and total else None
        return {
            "ref": version.ref,
            "name": version.name,
            "version": version.version,
            "hash": version.hash,
            "kind": version.kind,
            "format": version.format,
            "rows": version.rows,
            "columns": version.columns,
            "missing": sum(int(c.get("missing", 0)) for c in version.columns),
            "label_column": version.extra.get("label_column"),
            "labels": balance,
            "preview": preview,
            "created_at": version.created_at,
            "source": version.source,
            "path": str(version.path),
        }


__all__ = ["SAMPLES", "DatasetError", "DatasetStore", "DatasetVersion", "check_name", "sanitize_name"]

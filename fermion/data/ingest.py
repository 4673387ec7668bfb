"""Reading and checking what `DatasetStore.add` is given: tables, image folders, zips and built-in samples.

Everything here works inside a private staging folder; nothing touches the store's versions.
pandas, numpy and PIL are imported inside functions so that `import fermion` stays light.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import stat
import zipfile
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


class DatasetError(ValueError):
    """Bad input or an unknown dataset; `message` says what is wrong and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


TABLE_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
TABLE_FILES = {"csv": "data.csv", "jsonl": "data.jsonl", "parquet": "data.parquet"}
SAMPLES = ("iris", "wine", "breast_cancer", "digits", "diabetes")
SUPPORTED = (
    "CSV (.csv), JSON Lines (.jsonl, .ndjson), Parquet (.parquet), a folder of images with one sub-folder per label, "
    f"a .zip of such a folder, or sample:NAME ({', '.join(SAMPLES)})"
)
LABEL_COLUMNS = ("target", "label")
#: A label column with more distinct values than this is a regression target, not classes.
MAX_LABELS = 100
#: Limits on what a dataset may hold, checked as early as the format allows (a CSV's columns from its
#: header line, a Parquet file's from its footer, a zip's entries from its directory, an image's
#: pixels from its header), before the work of reading all of it.
MAX_ROWS = 10_000_000
MAX_COLUMNS = 10_000
MAX_ZIP_ENTRIES = 100_000
MAX_IMAGE_PIXELS = 50_000_000
CHUNK = 1 << 20


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def _ignored(name: str) -> bool:
    """Hidden files and macOS zip litter are never data."""
    return name.startswith(".") or name in ("__MACOSX", "Thumbs.db", "desktop.ini")


# -- tables ------------------------------------------------------------------------------------


def copy_normalized(source: Path, target: Path, text: bool) -> str:
    """Copy `source` to `target` (text: CRLF/CR line ends become LF); return the sha256 of what was written."""
    digest = hashlib.sha256()
    with source.open("rb") as src, target.open("wb") as dst:
        carry = b""
        while chunk := src.read(CHUNK):
            if text:
                # A CR at the end of a chunk may be the first half of a CRLF: keep it for the next chunk.
                chunk = carry + chunk
                carry = b"\r" if chunk.endswith(b"\r") else b""
                chunk = chunk[: len(chunk) - len(carry)].replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            digest.update(chunk)
            dst.write(chunk)
        if carry:
            digest.update(b"\n")
            dst.write(b"\n")
    return digest.hexdigest()


def read_table(path: Path, fmt: str, label: str | None = None) -> pd.DataFrame:
    """Read a stored or incoming table; malformed input raises DatasetError naming the line."""
    import pandas as pd

    name = label or path.name
    if fmt == "csv":
        try:
            _check_shape(name, len(pd.read_csv(path, nrows=0).columns), None)
            return _checked(name, pd.read_csv(path))
        except pd.errors.EmptyDataError:
            raise DatasetError(f"{name} has no columns: a CSV file needs a header line (e.g. 'a,b,target')") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            detail = str(exc).replace("Error tokenizing data. C error: ", "").strip()
            raise DatasetError(f"{name} is not valid CSV: {detail}; fix that line and add it again") from None
    if fmt == "jsonl":
        return _checked(name, pd.DataFrame.from_records(_read_jsonl(path, name)))
    if fmt == "parquet":
        _need_parquet_engine()
        import pyarrow.parquet as pq

        try:
            footer = pq.read_metadata(path)
            _check_shape(name, footer.num_columns, footer.num_rows)
            return pd.read_parquet(path)
        except DatasetError:
            raise
        except Exception as exc:  # pyarrow raises many types for corrupt files
            raise DatasetError(f"{name} is not a readable Parquet file: {exc}") from None
    raise DatasetError(f"unknown table format {fmt!r}; supported: {SUPPORTED}")


def _check_shape(name: str, columns: int, rows: int | None) -> None:
    if columns > MAX_COLUMNS:
        raise DatasetError(f"{name} has {columns:,} columns, over the limit of {MAX_COLUMNS:,}; keep the columns you train on")
    if rows is not None and rows > MAX_ROWS:
        raise DatasetError(f"{name} has {rows:,} rows, over the limit of {MAX_ROWS:,}; sample it, or split it into datasets")


def _checked(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    _check_shape(name, len(frame.columns), len(frame))
    return frame


def _read_jsonl(path: Path, name: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            if number > MAX_ROWS:
                _check_shape(name, 0, number)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, UnicodeDecodeError) as exc:
                raise DatasetError(f"{name} line {number} is not valid JSON ({exc}); each line must be one JSON object") from None
            if not isinstance(record, dict):
                raise DatasetError(
                    f"{name} line {number} is a JSON {type(record).__name__}, not an object; each line must be one JSON object"
                )
            records.append(record)
    return records


def _need_parquet_engine() -> None:
    for module in ("pyarrow", "fastparquet"):
        try:
            __import__(module)
            return
        except ImportError:
            continue
    raise DatasetError("reading Parquet needs pyarrow, which is not installed: pip install pyarrow")


def table_stats(frame: pd.DataFrame) -> dict[str, Any]:
    """Rows, columns with dtype and missing counts, and the label balance of a target/label column."""
    columns = [
        {"name": str(col), "dtype": str(frame[col].dtype), "missing": int(frame[col].isna().sum())} for col in frame.columns
    ]
    labels = None
    label_column = next((str(col) for col in frame.columns if str(col).lower() in LABEL_COLUMNS), None)
    if label_column is not None:
        series = frame[label_column]
        if series.dtype.kind != "f" and series.nunique() <= MAX_LABELS:
            labels = {str(key): int(count) for key, count in series.value_counts(dropna=True).sort_index().items()}
    return {"rows": len(frame), "columns": columns, "label_column": label_column, "labels": labels}


# -- images ------------------------------------------------------------------------------------


def image_tree(root: Path, name: str) -> list[tuple[str, str, Path]]:
    """(relative posix path, label, file) for every image under `root`'s label folders, checked to decode."""
    from PIL import Image, UnidentifiedImageError

    label_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not _ignored(p.name))
    stray = sorted(p.name for p in root.iterdir() if p.is_file() and not _ignored(p.name))
    if not label_dirs:
        raise DatasetError(
            f"{name} has no label sub-folders: put each image in a sub-folder named after its label (e.g. {name}/cat/1.png)"
        )
    if stray:
        raise DatasetError(f"{name}/{stray[0]} is not in a label folder: move it into a sub-folder named after its label")
    found: list[tuple[str, str, Path]] = []
    for label_dir in label_dirs:
        files = sorted(
            p for p in label_dir.rglob("*") if p.is_file() and not any(_ignored(part) for part in p.relative_to(root).parts)
        )
        if not files:
            raise DatasetError(f"label folder {name}/{label_dir.name} has no images; add some or remove the folder")
        for file in files:
            rel = file.relative_to(root).as_posix()
            try:
                # A full decode, not just verify(): a truncated file passes verify() but fails to train on.
                with Image.open(file) as image:
                    width, height = image.size  # from the header: refuse a pixel bomb before decoding it
                    if width * height > MAX_IMAGE_PIXELS:
                        raise DatasetError(
                            f"{name}/{rel} is {width}×{height} pixels, over the limit of {MAX_IMAGE_PIXELS:,}; scale it down"
                        )
                    image.load()
            except DatasetError:
                raise
            except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
                raise DatasetError(
                    f"{name}/{rel} is not an image that can be decoded ({type(exc).__name__}); remove or replace it"
                ) from None
            found.append((rel, label_dir.name, file))
    return found


def copy_images(files: list[tuple[str, str, Path]], target: Path) -> tuple[str, dict[str, Any]]:
    """Copy the images under `target`; return the set's hash (over sorted path and file hashes) and its stats."""
    pairs: list[tuple[str, str]] = []
    formats: Counter[str] = Counter()
    for rel, _label, file in files:
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with file.open("rb") as src, dest.open("wb") as dst:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                dst.write(chunk)
        pairs.append((rel, digest.hexdigest()))
        formats[file.suffix.lower().lstrip(".") or "none"] += 1
    whole = hashlib.sha256()
    for rel, file_hash in sorted(pairs):
        whole.update(f"{rel}\0{file_hash}\n".encode())
    labels = Counter(label for _, label, _ in files)
    stats = {
        "rows": len(files),
        "columns": [{"name": "image", "dtype": "image", "missing": 0}, {"name": "label", "dtype": "str", "missing": 0}],
        "label_column": "label",
        "labels": dict(sorted(labels.items())),
        "image_formats": dict(sorted(formats.items())),
    }
    return whole.hexdigest(), stats


def folder_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


# -- zips --------------------------------------------------------------------------------------

_DRIVE = re.compile(r"^[A-Za-z]:")


def check_zip(archive: zipfile.ZipFile, name: str, max_bytes: int) -> None:
    """Refuse, before extracting anything, entries that escape the folder, links, and archives that unpack too big."""
    entries = archive.infolist()
    if len(entries) > MAX_ZIP_ENTRIES:
        raise DatasetError(
            f"{name} has {len(entries):,} entries, over the limit of {MAX_ZIP_ENTRIES:,}; refusing to extract anything"
        )
    total = 0
    for info in entries:
        entry = info.filename.replace("\\", "/")
        parts = PurePosixPath(entry).parts
        if entry.startswith("/") or _DRIVE.match(entry) or ".." in parts:
            raise DatasetError(f"{name} has an entry that escapes its folder ({info.filename!r}); refusing to extract anything")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DatasetError(f"{name} has a symbolic link ({info.filename!r}); refusing to extract anything")
        total += info.file_size
    if total > max_bytes:
        raise DatasetError(f"{name} unpacks to {human_bytes(total)}, over the limit of {human_bytes(max_bytes)}")


def extract_zip(source: Path, target: Path, max_bytes: int) -> Path:
    """Extract a checked zip into `target`; return the folder that holds the label folders."""
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{source.name} is not a readable zip file ({exc})") from None
    with archive:
        check_zip(archive, source.name, max_bytes)
        archive.extractall(target)
    # A zip of a folder holds that folder: step into it unless it holds images itself (then it is one label).
    entries = [p for p in target.iterdir() if not _ignored(p.name)]
    if len(entries) == 1 and entries[0].is_dir():
        inner = entries[0]
        if not any(p.is_file() and not _ignored(p.name) for p in inner.iterdir()):
            return inner
    return target


# -- samples -----------------------------------------------------------------------------------


def build_sample(sample: str, target: Path) -> Path:
    """Write scikit-learn's bundled dataset `sample` under `target` (offline); return the file or folder made."""
    if sample not in SAMPLES:
        raise DatasetError(f"unknown sample {sample!r}; known samples: {', '.join(SAMPLES)} (e.g. sample:iris)")
    from sklearn import datasets

    target.mkdir(parents=True, exist_ok=True)
    if sample == "digits":
        import numpy as np
        from PIL import Image

        bunch = datasets.load_digits()
        folder = target / "digits"
        for label in range(10):
            (folder / str(label)).mkdir(parents=True)
        for index, (pixels, label) in enumerate(zip(bunch.images, bunch.target, strict=True)):
            # Pixel values run 0..16; scale to the full 8-bit range so the images look like digits.
            gray = np.clip(np.round(pixels * 255 / 16), 0, 255).astype(np.uint8)
            Image.fromarray(gray).save(folder / str(label) / f"{index:04d}.png", optimize=False)
        return folder
    bunch = getattr(datasets, f"load_{sample}")(as_frame=True)
    frame = bunch.frame.copy()
    if sample != "diabetes":
        names = list(bunch.target_names)
        frame["target"] = [str(names[int(value)]) for value in frame["target"]]
    path = target / f"{sample}.csv"
    frame.to_csv(path, index=False)
    return path


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)

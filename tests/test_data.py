"""`fermion.data`: samples, versions by content hash, table and image sources, and every refusal of bad input."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from fermion.data import SAMPLES, DatasetError, DatasetStore, sanitize_name
from fermion.versioned import MANIFEST


@pytest.fixture
def store(tmp_path: Path) -> DatasetStore:
    return DatasetStore(tmp_path / "datasets")


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> DatasetStore:
    """One store holding every sample, built once: building digits writes 1797 PNGs."""
    store = DatasetStore(tmp_path_factory.mktemp("samples") / "datasets")
    for sample in SAMPLES:
        store.add(f"sample:{sample}")
    return store


def png_bytes(color: int = 0, size: tuple[int, int] = (4, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def image_folder(root: Path, labels: dict[str, int]) -> Path:
    for label, count in labels.items():
        (root / label).mkdir(parents=True)
        for index in range(count):
            (root / label / f"{index}.png").write_bytes(png_bytes(index * 10))
    return root


def assert_nothing_registered(store: DatasetStore) -> None:
    assert store.list() == []
    staging = store.root / ".staging"
    assert not staging.exists() or not any(staging.iterdir()), "a failed add left staging files behind"


# -- samples -----------------------------------------------------------------------------------


def test_iris_sample(samples: DatasetStore):
    version = samples.get("iris")
    assert (version.ref, version.kind, version.rows, len(version.columns)) == ("iris@1", "table", 150, 5)
    assert version.labels == {"setosa": 50, "versicolor": 50, "virginica": 50}
    info = samples.describe("iris@1")
    assert info["label_column"] == "target" and info["missing"] == 0
    assert {k: v["count"] for k, v in info["labels"].items()} == {"setosa": 50, "versicolor": 50, "virginica": 50}
    assert len(info["preview"]) == 5 and info["preview"][0]["target"] == "setosa"
    frame = samples.load_table("iris")
    assert frame.shape == (150, 5)


@pytest.mark.parametrize(
    ("name", "rows", "columns", "classes"),
    [("wine", 178, 14, 3), ("breast-cancer", 569, 31, 2), ("diabetes", 442, 11, None)],
)
def test_table_samples(samples: DatasetStore, name: str, rows: int, columns: int, classes: int | None):
    version = samples.get(name)
    assert (version.rows, len(version.columns)) == (rows, columns)
    assert (len(version.labels) if version.labels else None) == classes
    assert samples.describe(name)["rows"] == rows
    assert "target" in samples.load_table(name).columns


def test_diabetes_target_is_numeric(samples: DatasetStore):
    frame = samples.load_table("diabetes")
    assert frame["target"].dtype.kind == "f"
    assert samples.describe("diabetes")["labels"] is None


def test_digits_sample_is_images_in_label_folders(samples: DatasetStore):
    version = samples.get("digits@1")
    assert (version.kind, version.rows) == ("images", 1797)
    files = samples.image_files(version)
    assert len(files) == 1797
    assert sorted({label for _, label in files}) == [str(d) for d in range(10)]
    assert sum(version.labels.values()) == 1797
    with Image.open(files[0][0]) as image:
        assert (image.size, image.mode) == ((8, 8), "L")
    info = samples.describe("digits")
    assert info["preview"][0]["image"].endswith(".png") and len(info["labels"]) == 10


def test_manifest_is_complete(samples: DatasetStore):
    version = samples.get("iris")
    manifest = json.loads((version.path / MANIFEST).read_text())
    assert {"name", "version", "hash", "kind", "format", "rows", "columns", "labels", "created_at", "source"} <= set(manifest)
    assert manifest["source"] == "sample:iris" and manifest["format"] == "csv"
    assert version.path == samples.root / "iris" / "1"


def test_unknown_sample_lists_known_ones(store: DatasetStore):
    with pytest.raises(DatasetError, match=r"unknown sample 'irsi'; known samples: iris, wine, breast_cancer, digits, diabetes"):
        store.add("sample:irsi")
    assert_nothing_registered(store)


# -- versions ----------------------------------------------------------------------------------


def test_same_content_twice_is_the_same_version_and_changed_content_is_version_2(store: DatasetStore, tmp_path: Path):
    path = tmp_path / "Sales Data.csv"
    path.write_text("a,b,label\n1,x,yes\n2,y,no\n")
    first = store.add(path)
    assert first.ref == "sales-data@1"
    assert store.add(path).ref == "sales-data@1"
    # Line endings are normalized, so a CRLF copy of the same table is the same content.
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes(b"a,b,label\r\n1,x,yes\r\n2,y,no\r\n")
    assert store.add(crlf, name="sales-data").ref == "sales-data@1"
    path.write_text("a,b,label\n1,x,yes\n2,y,no\n3,z,yes\n")
    second = store.add(path)
    assert (second.ref, second.rows, second.labels) == ("sales-data@2", 3, {"no": 1, "yes": 2})
    assert first.hash != second.hash
    assert [v.ref for v in store.list()] == ["sales-data@1", "sales-data@2"]
    assert store.get("sales-data").ref == "sales-data@2"
    assert store.get("sales-data@1").rows == 2


def test_get_unknown_name_suggests(store: DatasetStore, tmp_path: Path):
    with pytest.raises(DatasetError, match="there are no datasets yet"):
        store.get("iris")
    (tmp_path / "iris.csv").write_text("x,target\n1,a\n")
    store.add(tmp_path / "iris.csv")
    with pytest.raises(DatasetError, match=r"no dataset named 'irs'; did you mean 'iris'\? \(known datasets: iris\)"):
        store.get("irs")
    with pytest.raises(DatasetError, match=r"iris has no version 7 \(versions: 1\)"):
        store.get("iris@7")
    with pytest.raises(DatasetError, match="bad version"):
        store.get("iris@latest")


def test_names(store: DatasetStore, tmp_path: Path):
    assert sanitize_name("My Data_2024") == "my-data-2024"
    assert sanitize_name("2024 sales") == "d-2024-sales"
    assert sanitize_name("___") == "dataset"
    (tmp_path / "t.csv").write_text("a\n1\n")
    with pytest.raises(DatasetError, match="invalid dataset name 'Bad_Name'"):
        store.add(tmp_path / "t.csv", name="Bad_Name")
    assert store.add(tmp_path / "t.csv", name="good-name").ref == "good-name@1"


# -- table formats -----------------------------------------------------------------------------


def test_csv_round_trip(store: DatasetStore, tmp_path: Path):
    frame = pd.DataFrame({"x": [1.5, None, 3.0], "city": ["a", "b", None], "target": [0, 1, 0]})
    frame.to_csv(tmp_path / "cities.csv", index=False)
    version = store.add(tmp_path / "cities.csv")
    loaded = store.load_table(version)
    pd.testing.assert_frame_equal(loaded, frame, check_dtype=False)
    missing = {c["name"]: c["missing"] for c in version.columns}
    assert missing == {"x": 1, "city": 1, "target": 0}
    assert version.labels == {"0": 2, "1": 1}


def test_jsonl_round_trip(store: DatasetStore, tmp_path: Path):
    rows = [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}, {"text": "fine", "label": "pos", "extra": 1}]
    (tmp_path / "reviews.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    version = store.add(tmp_path / "reviews.jsonl")
    assert (version.ref, version.format, version.rows, version.labels) == ("reviews@1", "jsonl", 3, {"neg": 1, "pos": 2})
    loaded = store.load_table(version)
    assert list(loaded.columns) == ["text", "label", "extra"] and loaded["text"].tolist() == ["good", "bad", "fine"]
    assert {c["name"]: c["missing"] for c in version.columns}["extra"] == 2


def test_parquet_round_trip(store: DatasetStore, tmp_path: Path):
    frame = pd.DataFrame({"x": [1, 2, 3], "target": ["a", "b", "a"]})
    frame.to_parquet(tmp_path / "small.parquet")
    version = store.add(tmp_path / "small.parquet")
    assert (version.format, version.rows) == ("parquet", 3)
    pd.testing.assert_frame_equal(store.load_table(version), frame, check_dtype=False)


def test_parquet_without_pyarrow_says_what_to_install(store: DatasetStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import sys

    for module in ("pyarrow", "fastparquet"):  # as on a machine without them (None makes the import fail)
        monkeypatch.setitem(sys.modules, module, None)
    (tmp_path / "small.parquet").write_bytes(b"PAR1 not really PAR1")
    with pytest.raises(DatasetError, match="pip install pyarrow"):
        store.add(tmp_path / "small.parquet")
    assert_nothing_registered(store)


# -- image sets --------------------------------------------------------------------------------


def test_image_folder(store: DatasetStore, tmp_path: Path):
    folder = image_folder(tmp_path / "Pets", {"cat": 3, "dog": 2})
    (folder / ".DS_Store").write_bytes(b"junk")  # hidden files are ignored
    version = store.add(folder)
    assert (version.ref, version.kind, version.rows, version.labels) == ("pets@1", "images", 5, {"cat": 3, "dog": 2})
    files = store.image_files(version)
    assert [(p.name, label) for p, label in files][:2] == [("0.png", "cat"), ("1.png", "cat")]
    assert all(p.is_file() and p.is_relative_to(version.path) for p, _ in files)
    assert store.add(folder).ref == "pets@1"
    (folder / "dog" / "9.png").write_bytes(png_bytes(200))
    assert store.add(folder).ref == "pets@2"
    with pytest.raises(DatasetError, match="is an image set, not a table"):
        store.load_table("pets")


def test_zip_of_image_folder_has_the_same_hash_as_the_folder(store: DatasetStore, tmp_path: Path):
    folder = image_folder(tmp_path / "pets", {"cat": 2, "dog": 2})
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(folder.rglob("*.png")):
            zf.write(file, file.relative_to(tmp_path).as_posix())  # zipped with its top folder
    from_zip = store.add(archive, name="zipped")
    from_folder = store.add(folder, name="folder")
    assert (from_zip.rows, from_zip.labels) == (4, {"cat": 2, "dog": 2})
    assert from_zip.hash == from_folder.hash


@pytest.mark.parametrize("entry", ["../evil.txt", "/tmp/evil.txt", "cat/../../evil.txt", "C:/evil.txt"])
def test_zip_escaping_its_folder_is_refused_before_extracting(store: DatasetStore, tmp_path: Path, entry: str):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("cat/0.png", png_bytes())
        zf.writestr(entry, "evil")
    with pytest.raises(DatasetError, match="escapes its folder.*refusing to extract anything"):
        store.add(archive)
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()
    assert not list(store.root.rglob("*.png")) and not list(store.root.rglob("evil.txt"))
    assert_nothing_registered(store)


def test_not_a_zip(store: DatasetStore, tmp_path: Path):
    (tmp_path / "broken.zip").write_bytes(b"not a zip at all")
    with pytest.raises(DatasetError, match="broken.zip is not a readable zip file"):
        store.add(tmp_path / "broken.zip")


def test_image_that_does_not_decode_names_the_file(store: DatasetStore, tmp_path: Path):
    folder = image_folder(tmp_path / "pets", {"cat": 2})
    (folder / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match=r"pets/cat/notes\.txt is not an image that can be decoded"):
        store.add(folder)
    assert_nothing_registered(store)


def test_truncated_image_is_refused(store: DatasetStore, tmp_path: Path):
    folder = image_folder(tmp_path / "pets", {"cat": 1})
    (folder / "cat" / "cut.png").write_bytes(png_bytes(size=(64, 64))[:60])
    with pytest.raises(DatasetError, match=r"pets/cat/cut\.png is not an image that can be decoded"):
        store.add(folder)
    assert_nothing_registered(store)


def test_folder_without_label_folders(store: DatasetStore, tmp_path: Path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "0.png").write_bytes(png_bytes())
    with pytest.raises(DatasetError, match="flat has no label sub-folders"):
        store.add(tmp_path / "flat")
    image_folder(tmp_path / "mixed", {"cat": 1})
    (tmp_path / "mixed" / "stray.png").write_bytes(png_bytes())
    with pytest.raises(DatasetError, match=r"mixed/stray\.png is not in a label folder"):
        store.add(tmp_path / "mixed")
    (tmp_path / "hollow" / "cat").mkdir(parents=True)
    (tmp_path / "hollow" / "cat" / "x.png").write_bytes(png_bytes())
    (tmp_path / "hollow" / "dog").mkdir()
    with pytest.raises(DatasetError, match="label folder hollow/dog has no images"):
        store.add(tmp_path / "hollow")
    assert_nothing_registered(store)


# -- limits and bad input ----------------------------------------------------------------------


def test_size_limit(tmp_path: Path):
    store = DatasetStore(tmp_path / "datasets", max_bytes=300)
    (tmp_path / "big.csv").write_text("a,b\n" + "1,2\n" * 100)
    with pytest.raises(DatasetError, match=r"big\.csv is 404 B, over the limit of 300 B"):
        store.add(tmp_path / "big.csv")
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cat/0.png", b"\0" * 10_000)
    with pytest.raises(DatasetError, match=r"bomb\.zip unpacks to .* over the limit"):
        store.add(archive)
    assert_nothing_registered(store)


def test_empty_file(store: DatasetStore, tmp_path: Path):
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"empty\.csv is empty"):
        store.add(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("a,b\n")
    with pytest.raises(DatasetError, match=r"header\.csv has columns but no rows"):
        store.add(tmp_path / "header.csv")
    assert_nothing_registered(store)


def test_malformed_csv_reports_the_line(store: DatasetStore, tmp_path: Path):
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,4\n5,6,7\n")
    with pytest.raises(DatasetError, match=r"bad\.csv is not valid CSV: Expected 2 fields in line 4, saw 3"):
        store.add(tmp_path / "bad.csv")
    assert_nothing_registered(store)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}\n{"a": 2\n', r"bad\.jsonl line 2 is not valid JSON"),
        ('{"a": 1}\n\n[1, 2]\n', r"bad\.jsonl line 3 is a JSON list, not an object"),
    ],
)
def test_malformed_jsonl_reports_the_line(store: DatasetStore, tmp_path: Path, text: str, expected: str):
    (tmp_path / "bad.jsonl").write_text(text)
    with pytest.raises(DatasetError, match=expected):
        store.add(tmp_path / "bad.jsonl")
    assert_nothing_registered(store)


def test_unknown_format_and_missing_file(store: DatasetStore, tmp_path: Path):
    (tmp_path / "book.xlsx").write_bytes(b"PK...")
    with pytest.raises(DatasetError, match=r"unknown format '\.xlsx' for book\.xlsx; supported: CSV \(\.csv\), JSON Lines"):
        store.add(tmp_path / "book.xlsx")
    with pytest.raises(DatasetError, match="no file or folder named"):
        store.add(tmp_path / "nope.csv")
    assert_nothing_registered(store)


# -- shape limits: refused from what can be read first ---------------------------------------------


def test_tables_over_the_column_or_row_limit_are_refused(store: DatasetStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from fermion.data import ingest

    monkeypatch.setattr(ingest, "MAX_COLUMNS", 5)
    monkeypatch.setattr(ingest, "MAX_ROWS", 3)
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(f"c{i}" for i in range(6)) + "\n" + ",".join("1" * 6) + "\n")
    with pytest.raises(DatasetError, match="6 columns, over the limit of 5"):
        store.add(wide)
    long = tmp_path / "long.csv"
    long.write_text("a,target\n" + "1,0\n" * 4)
    with pytest.raises(DatasetError, match="4 rows, over the limit of 3"):
        store.add(long)
    lines = tmp_path / "long.jsonl"
    lines.write_text('{"a": 1, "target": 0}\n' * 5)
    with pytest.raises(DatasetError, match="over the limit of 3"):
        store.add(lines)
    parquet = tmp_path / "long.parquet"
    pd.DataFrame({"a": range(4), "target": [0, 1, 0, 1]}).to_parquet(parquet)
    with pytest.raises(DatasetError, match="4 rows, over the limit of 3"):
        store.add(parquet)
    assert_nothing_registered(store)


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(
    store: DatasetStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from fermion.data import ingest

    monkeypatch.setattr(ingest, "MAX_IMAGE_PIXELS", 100)
    folder = image_folder(tmp_path / "pets", {"cat": 1, "dog": 1})
    Image.new("L", (20, 20)).save(folder / "cat" / "big.png")
    with pytest.raises(DatasetError, match="20×20 pixels, over the limit of 100"):
        store.add(folder)
    assert_nothing_registered(store)


def test_a_zip_with_too_many_entries_is_refused_before_extracting(
    store: DatasetStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from fermion.data import ingest

    monkeypatch.setattr(ingest, "MAX_ZIP_ENTRIES", 3)
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(4):
            zf.writestr(f"pets/cat/{i}.png", png_bytes(i))
    with pytest.raises(DatasetError, match="4 entries, over the limit of 3"):
        store.add(archive)
    assert_nothing_registered(store)

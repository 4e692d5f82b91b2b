"""A worker's own data: every loader reads good data and refuses data that does not match the
job's schema, naming the file, column, row or class and what was expected."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fedrelay.protocol.data_spec import ImageSchema, TabularSchema, TextSchema
from fedrelay.protocol.hashing import keccak256
from fedrelay.training.data import Dataset, TokenDataset
from fedrelay.training.datasets import (
    FileSource,
    InMemorySource,
    SchemaMismatch,
    dataset_blob,
    dataset_from_blob,
    load_examples,
)

TABLE = TabularSchema(features=(3,), dtype="float32", classes=4)


def _rows(n: int = 5) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    rng = np.random.default_rng(0)
    return rng.random((n, 3)).astype(np.float32), np.arange(n, dtype=np.int64) % 4


# --- npz ----------------------------------------------------------------------------------------


def test_npz_reads_features_and_labels(tmp_path: Path) -> None:
    features, labels = _rows()
    np.savez(tmp_path / "d.npz", features=features, labels=labels)
    data = load_examples(tmp_path / "d.npz", TABLE)
    assert isinstance(data, Dataset)
    assert np.array_equal(data.features, features)
    assert np.array_equal(data.labels, labels)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"features": np.zeros((2, 3), np.float64), "labels": np.zeros(2, np.int64)},
         "features are float64, the job's schema says float32"),
        ({"features": np.zeros((2, 4), np.float32), "labels": np.zeros(2, np.int64)},
         r"features of shape \(4,\) per example, the job's schema says \(3,\)"),
        ({"features": np.zeros((2, 3), np.float32), "labels": np.array([0, 7])},
         r"label 7 in row 1 is outside the job's classes 0..3"),
        ({"features": np.zeros((2, 3), np.float32), "labels": np.array([0.0, 1.0])},
         "labels are float64, the job's schema needs integer class labels"),
        ({"features": np.zeros((2, 3), np.float32)}, "no array 'labels'"),
    ],
)  # fmt: skip
def test_npz_mismatches_are_named(
    tmp_path: Path,
    arrays: dict[str, np.ndarray],
    message: str,  # type: ignore[type-arg]
) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(SchemaMismatch, match=message) as refused:
        load_examples(path, TABLE)
    assert str(path) in str(refused.value)


# --- CSV and Parquet ----------------------------------------------------------------------------


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_csv_reads_feature_columns_and_the_label_column(tmp_path: Path) -> None:
    path = _csv(tmp_path / "d.csv", "a,b,label,c", ["1,2.5,3,4", "0.5,1,0,2"])
    data = load_examples(path, TABLE)
    assert isinstance(data, Dataset)
    assert data.features.tolist() == [[1.0, 2.5, 4.0], [0.5, 1.0, 2.0]]
    assert data.labels.tolist() == [3, 0]


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        ("a,b,c", ["1,2,3"], "no label column 'label'"),
        ("a,b,label", ["1,2,0"], "2 feature columns, the job's schema says 3"),
        ("a,b,c,label", ["1,2,3,0", "1,x,3,1"], r"column 'b' holds 'x' in row 1"),
        ("a,b,c,label", ["1,2,3,0", "1,2,3,9"], r"label 9 in row 1 is outside"),
        ("a,b,c,label", ["1,2,3,0.5"], r"column 'label' holds 0.5 in row 0"),
        ("a,b,c,label", ["1,2,3,0", "1,,3,1"], r"column 'b' has an empty value in row 1"),
    ],
)
def test_csv_mismatches_are_named(
    tmp_path: Path, header: str, rows: list[str], message: str
) -> None:
    path = _csv(tmp_path / "bad.csv", header, rows)
    with pytest.raises(SchemaMismatch, match=message):
        load_examples(path, TABLE)


def test_parquet_reads_typed_columns_and_refuses_another_type(tmp_path: Path) -> None:
    features, labels = _rows()
    columns = {f"x{i}": pa.array(features[:, i]) for i in range(3)}
    pq.write_table(pa.table({**columns, "label": pa.array(labels)}), tmp_path / "d.parquet")
    data = load_examples(tmp_path / "d.parquet", TABLE)
    assert isinstance(data, Dataset)
    assert np.array_equal(data.features, features)
    columns["x1"] = pa.array(features[:, 1].astype(np.float64))
    pq.write_table(pa.table({**columns, "label": pa.array(labels)}), tmp_path / "w.parquet")
    with pytest.raises(
        SchemaMismatch, match="column 'x1' is double, the job's schema says float32"
    ):
        load_examples(tmp_path / "w.parquet", TABLE)


def test_a_folder_of_tables_is_concatenated_in_name_order(tmp_path: Path) -> None:
    features, labels = _rows(4)
    np.savez(tmp_path / "a.npz", features=features[:2], labels=labels[:2])
    _csv(tmp_path / "b.csv", "p,q,r,label",
         [",".join(str(v) for v in [*features[i], labels[i]]) for i in (2, 3)])  # fmt: skip
    data = load_examples(tmp_path, TABLE)
    assert isinstance(data, Dataset)
    assert data.labels.tolist() == labels.tolist()
    assert np.allclose(data.features, features)


def test_a_multi_dimensional_tabular_schema_reshapes_the_columns(tmp_path: Path) -> None:
    schema = TabularSchema(features=(2, 2), dtype="float32", classes=2)
    path = _csv(tmp_path / "d.csv", "a,b,c,d,label", ["1,2,3,4,1"])
    data = load_examples(path, schema)
    assert isinstance(data, Dataset)
    assert data.features.shape == (1, 2, 2)


# --- images ------------------------------------------------------------------------------------


IMAGES = ImageSchema(channels=1, height=4, width=5, classes=3, class_names=("cat", "dog", "owl"))


def _image(path: Path, size: tuple[int, int] = (5, 4), mode: str = "L", value: int = 255) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 0, 0)).save(path)


def test_an_image_folder_gives_pixels_and_labels_by_class_folder(tmp_path: Path) -> None:
    _image(tmp_path / "owl" / "b.png", value=51)
    _image(tmp_path / "cat" / "a.png")
    _image(tmp_path / "owl" / "a.png", value=0)
    (tmp_path / ".DS_Store").write_text("ignored")
    data = load_examples(tmp_path, IMAGES)
    assert isinstance(data, Dataset)
    assert data.features.shape == (3, 1, 4, 5)
    assert data.labels.tolist() == [0, 2, 2]  # label order, then file name
    assert np.allclose(data.features[:, 0, 0, 0], [1.0, 0.0, 0.2])


def test_numbered_class_folders_without_names(tmp_path: Path) -> None:
    schema = ImageSchema(channels=3, height=4, width=5, classes=2)
    _image(tmp_path / "1" / "x.png", mode="RGB")
    data = load_examples(tmp_path, schema)
    assert isinstance(data, Dataset)
    assert data.features.shape == (1, 3, 4, 5)
    assert data.labels.tolist() == [1]


def test_image_mismatches_are_named(tmp_path: Path) -> None:
    _image(tmp_path / "cat" / "ok.png")
    _image(tmp_path / "dog" / "big.png", size=(6, 4))
    with pytest.raises(
        SchemaMismatch, match=r"big.png: image of 6x4 pixels, the job's schema says 5x4"
    ):
        load_examples(tmp_path, IMAGES)
    (tmp_path / "dog" / "big.png").unlink()
    _image(tmp_path / "dog" / "colour.png", mode="RGB")
    with pytest.raises(
        SchemaMismatch, match=r"colour.png: a RGB image \(3 channels\), the job's schema says 1"
    ):
        load_examples(tmp_path, IMAGES)
    (tmp_path / "dog" / "colour.png").unlink()
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(SchemaMismatch, match=r"notes.txt: not an image"):
        load_examples(tmp_path, IMAGES)
    (tmp_path / "dog" / "notes.txt").unlink()
    _image(tmp_path / "horse" / "h.png")
    with pytest.raises(
        SchemaMismatch, match=r"folder 'horse' is not a class of the job \(classes: cat, dog, owl\)"
    ):
        load_examples(tmp_path, IMAGES)


def test_an_empty_image_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    with pytest.raises(SchemaMismatch, match="no image in any class folder"):
        load_examples(tmp_path, IMAGES)


# --- text --------------------------------------------------------------------------------------


def test_a_byte_level_corpus_is_its_utf8_bytes(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("héllo")
    (tmp_path / "a.txt").write_text("ab")
    data = load_examples(tmp_path, TextSchema(tokenizer="bytes", context=2))
    assert isinstance(data, TokenDataset)
    assert data.tokens.tolist() == list(b"ab" + "héllo".encode())
    assert len(data) == 8 // 3  # 8 bytes in windows of context + 1


def test_a_character_level_corpus_uses_the_vocabulary_blob(tmp_path: Path) -> None:
    vocabulary = b"abc \n"
    schema = TextSchema(tokenizer="chars", vocab=5, context=3,
                        vocabulary_hash=keccak256(vocabulary).hex())  # fmt: skip
    (tmp_path / "c.txt").write_text("abc cab\nba")
    data = FileSource(tmp_path / "c.txt").load(schema, vocabulary)
    assert isinstance(data, TokenDataset)
    assert data.tokens.tolist() == [0, 1, 2, 3, 2, 0, 1, 4, 1, 0]
    (tmp_path / "c.txt").write_text("abc\nabz")
    with pytest.raises(SchemaMismatch, match=r"line 2, column 3: character 'z' \(U\+007A\)"):
        load_examples(tmp_path / "c.txt", schema, vocabulary)
    with pytest.raises(SchemaMismatch, match="the vocabulary blob hashes to"):
        load_examples(tmp_path / "c.txt", schema, b"abcd ")


def test_the_named_longest_match_tokenizer(tmp_path: Path) -> None:
    tokens = ["a", "b", "ab", "abc", " "]
    vocabulary = json.dumps(tokens).encode()
    schema = TextSchema(tokenizer="named", name="longest-match", vocab=5, context=1,
                        vocabulary_hash=keccak256(vocabulary).hex())  # fmt: skip
    (tmp_path / "t.txt").write_text("abcab a")
    data = load_examples(tmp_path / "t.txt", schema, vocabulary)
    assert isinstance(data, TokenDataset)
    assert data.tokens.tolist() == [3, 2, 4, 0]
    other = TextSchema(tokenizer="named", name="gpt2", vocab=5, context=1,
                       vocabulary_hash=keccak256(vocabulary).hex())  # fmt: skip
    with pytest.raises(
        SchemaMismatch, match=r"no tokenizer named 'gpt2' here \(built in: longest-match\)"
    ):
        load_examples(tmp_path / "t.txt", other, vocabulary)


def test_text_refusals(tmp_path: Path) -> None:
    (tmp_path / "short.txt").write_text("abc")
    with pytest.raises(SchemaMismatch, match=r"3 tokens, fewer than one window of 5"):
        load_examples(tmp_path / "short.txt", TextSchema(context=4))
    (tmp_path / "latin.txt").write_bytes(b"ok \xe9")
    schema = TextSchema(tokenizer="chars", vocab=3, context=1,
                        vocabulary_hash=keccak256(b"ok ").hex())  # fmt: skip
    with pytest.raises(SchemaMismatch, match="not UTF-8 text at byte 3"):
        load_examples(tmp_path / "latin.txt", schema, b"ok ")
    with pytest.raises(SchemaMismatch, match="no such file or folder"):
        load_examples(tmp_path / "missing.txt", TextSchema())


# --- in memory and blobs -----------------------------------------------------------------------


def test_examples_in_memory_are_checked_the_same_way() -> None:
    features, labels = _rows()
    assert len(InMemorySource(Dataset(features, labels)).load(TABLE, None)) == 5
    with pytest.raises(
        SchemaMismatch, match=r"examples of shape \(2,\), the job's schema says \(3,\)"
    ):
        InMemorySource(Dataset(features[:, :2], labels)).load(TABLE, None)
    stream = TokenDataset(np.arange(10, dtype=np.int64), 2)
    with pytest.raises(
        SchemaMismatch, match=r"token 8 at position 8 is outside the job's vocabulary 0..7"
    ):
        InMemorySource(stream).load(TextSchema(tokenizer="chars", vocab=8, context=2,
                                               vocabulary_hash="0" * 64), None)  # fmt: skip
    with pytest.raises(SchemaMismatch, match="a token stream, the job's schema is tabular data"):
        InMemorySource(stream).load(TABLE, None)


def test_a_data_set_round_trips_through_its_tensor_blob() -> None:
    features, labels = _rows()
    data = Dataset(features, labels)
    back = dataset_from_blob(dataset_blob(data), TABLE)
    assert isinstance(back, Dataset)
    assert np.array_equal(back.features, features)
    stream = TokenDataset(np.arange(9, dtype=np.int64) % 256, 2)
    tokens = dataset_from_blob(dataset_blob(stream), TextSchema(context=2))
    assert isinstance(tokens, TokenDataset)
    assert np.array_equal(tokens.tokens, stream.tokens)
    with pytest.raises(
        SchemaMismatch, match=r"holds \['tokens'\], expected 'features' and 'labels'"
    ):
        dataset_from_blob(dataset_blob(stream), TABLE)
    with pytest.raises(SchemaMismatch, match="is not a tensor blob"):
        dataset_from_blob(b"nonsense", TABLE)

"""Model bundles: canonical packing, the refusals of unsafe folders and blobs, trusted loading."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from support.bundles import modules_named, write_bundle

from fedrelay.training import TrainingError, bundles
from fedrelay.training.bundles import (
    Bundle,
    BundleError,
    bundle_hash,
    load_bundle,
    pack_bundle,
    package_name,
    read_bundle,
    trusted_bundle_loader,
)
from fedrelay.training.trust import TrustPolicy, UntrustedBundle, bundle_signer, sign_bundle

POSTER_KEY = "0x" + "4c" * 32


class Fetcher:
    """A blob store stand-in that records what was fetched."""

    def __init__(self, *blobs: bytes) -> None:
        self.blobs = {bundle_hash(b): b for b in blobs}
        self.fetched: list[str] = []

    def __call__(self, name: str) -> bytes:
        self.fetched.append(name)
        return self.blobs[name]


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "imported.marker"


def _packed(tmp_path: Path, marker: Path, tag: str) -> tuple[str, bytes]:
    blob = pack_bundle(write_bundle(tmp_path / tag, marker, tag))
    return bundle_hash(blob), blob


# --- packing ----------------------------------------------------------------------------------


def test_packing_is_deterministic_whatever_the_order_and_times_of_the_files(
    tmp_path: Path, marker: Path
) -> None:
    first = pack_bundle(write_bundle(tmp_path / "a", marker, "same"))
    second_folder = tmp_path / "b"
    (second_folder / "layers").mkdir(parents=True)
    # The same files written in the opposite order, with other times and modes.
    for path in sorted((tmp_path / "a").rglob("*"), reverse=True):
        if path.is_file():
            target = second_folder / path.relative_to(tmp_path / "a")
            target.write_bytes(path.read_bytes())
            os.utime(target, (1_000_000, 1_000_000))
            target.chmod(0o600)
    (second_folder / "__pycache__").mkdir()
    (second_folder / "__pycache__" / "model_same.cpython-311.pyc").write_bytes(b"\0\1")
    second = pack_bundle(second_folder)
    assert first == second
    assert bundle_hash(first) == bundle_hash(second)
    assert len(bundle_hash(first)) == 64
    parsed = read_bundle(first)
    assert sorted(parsed.files) == ["layers/__init__.py", "model_same.py"]
    assert parsed.factory == "model_same:build"
    assert json.loads(first)["manifest"]["files"] == ["layers/__init__.py", "model_same.py"]


def test_a_changed_source_changes_the_hash(tmp_path: Path, marker: Path) -> None:
    folder = write_bundle(tmp_path / "x", marker, "x")
    before = bundle_hash(pack_bundle(folder))
    (folder / "layers" / "__init__.py").write_text("# another model\n")
    assert bundle_hash(pack_bundle(folder)) != before


def _bundle(tmp_path: Path) -> Path:
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"format": 1, "factory": "model:build"}')
    (folder / "model.py").write_text("def build():\n    return None\n")
    return folder


def test_a_symbolic_link_is_refused(tmp_path: Path) -> None:
    folder = _bundle(tmp_path)
    (tmp_path / "secret.py").write_text("KEY = 1\n")
    (folder / "linked.py").symlink_to(tmp_path / "secret.py")
    with pytest.raises(BundleError, match=r"linked\.py: symbolic links are refused"):
        pack_bundle(folder)


def test_a_linked_folder_is_refused(tmp_path: Path) -> None:
    folder = _bundle(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (folder / "sub").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(BundleError, match="sub: symbolic links are refused"):
        pack_bundle(folder)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("weights.bin", r"only Python sources \(\.py\)"),
        ("README.md", r"only Python sources \(\.py\)"),
        ("my-model.py", "not a Python identifier"),
        ("class.py", "not a Python identifier"),
    ],
)
def test_files_other_than_importable_sources_are_refused(
    tmp_path: Path, name: str, reason: str
) -> None:
    folder = _bundle(tmp_path)
    (folder / name).write_bytes(b"x = 1\n")
    with pytest.raises(BundleError, match=reason) as refused:
        pack_bundle(folder)
    assert name in str(refused.value)


def test_an_oversized_source_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _bundle(tmp_path)
    monkeypatch.setattr(bundles, "MAX_FILE_BYTES", 64)
    (folder / "big.py").write_text("x = 1\n" * 20)
    with pytest.raises(BundleError, match=r"big\.py: above the limit of 64 bytes"):
        pack_bundle(folder)


def test_an_oversized_bundle_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _bundle(tmp_path)
    monkeypatch.setattr(bundles, "MAX_BUNDLE_BYTES", 100)
    (folder / "more.py").write_text("x = 1\n" * 10)
    with pytest.raises(BundleError, match=r"the packed bundle is .* bytes, above 100"):
        pack_bundle(folder)


def test_too_many_files_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _bundle(tmp_path)
    monkeypatch.setattr(bundles, "MAX_FILES", 2)
    for index in range(3):
        (folder / f"m{index}.py").write_text("")
    with pytest.raises(BundleError, match="more than 2 source files"):
        pack_bundle(folder)


def test_a_source_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    folder = _bundle(tmp_path)
    (folder / "latin.py").write_bytes(b"name = '\xe9'\n")
    with pytest.raises(BundleError, match=r"latin\.py: not UTF-8 text"):
        pack_bundle(folder)


@pytest.mark.parametrize(
    ("manifest", "reason"),
    [
        (None, "no manifest.json"),
        ("[]", "must be a JSON object"),
        ('{"format": 2, "factory": "model:build"}', "format must be 1"),
        ('{"format": 1, "factory": "model"}', "'module:function'"),
        ('{"format": 1, "factory": "../model:build"}', "'module:function'"),
        ('{"format": 1, "factory": "absent:build"}', "names a module the bundle lacks"),
        ('{"format": 1, "factory": "model:build", "entry": 1}', "unknown keys"),
        ('{"format": 1, "factory": "model:build", "files": ["x.py"]}', "lists files"),
    ],
)
def test_a_bad_manifest_is_refused(tmp_path: Path, manifest: str | None, reason: str) -> None:
    folder = _bundle(tmp_path)
    if manifest is None:
        (folder / "manifest.json").unlink()
    else:
        (folder / "manifest.json").write_text(manifest)
    with pytest.raises(BundleError, match=reason):
        pack_bundle(folder)


def _crafted(files: dict[str, str], factory: str = "model:build") -> bytes:
    return Bundle(factory, files).to_bytes()


@pytest.mark.parametrize(
    "path", ["../escape.py", "/etc/evil.py", "pkg/../../escape.py", "a\\b.py", "./model.py"]
)
def test_a_blob_naming_a_path_outside_the_bundle_is_refused(path: str) -> None:
    blob = _crafted({"model.py": "def build(): pass\n", path: "x = 1\n"})
    with pytest.raises(BundleError, match="not a Python identifier"):
        read_bundle(blob)


def test_a_blob_that_is_not_the_canonical_packing_is_refused(tmp_path: Path) -> None:
    blob = pack_bundle(_bundle(tmp_path))
    spaced = json.dumps(json.loads(blob), indent=1).encode()
    with pytest.raises(BundleError, match="not in canonical form"):
        read_bundle(spaced)
    with pytest.raises(BundleError, match="not a model bundle"):
        read_bundle(b"\x00safetensors")


# --- loading ----------------------------------------------------------------------------------


def test_an_untrusted_bundle_is_refused_before_anything_of_it_is_fetched_or_imported(
    tmp_path: Path, marker: Path
) -> None:
    name, blob = _packed(tmp_path, marker, "untrusted")
    fetch = Fetcher(blob)
    signature = sign_bundle(name, POSTER_KEY)
    other_signer = TrustPolicy.of(signers=["0x" + "77" * 20])
    for trust in (TrustPolicy(), TrustPolicy.of(models=["ab" * 32]), other_signer):
        with pytest.raises(UntrustedBundle) as refused:
            load_bundle(name, fetch, trust, signature=signature)
        message = str(refused.value)
        assert f"model bundle {name} is not trusted on this machine" in message
        assert f"--trust-model {name}" in message
        assert "trust file" in message
        assert f"signer {bundle_signer(name, signature)}" in message
        assert "runs the job poster's Python code here" in message
    assert fetch.fetched == []
    assert modules_named("untrusted") == []
    assert package_name(name) not in sys.modules
    assert not marker.exists()


def test_a_trusted_bundle_builds_its_model_under_a_private_package(
    tmp_path: Path, marker: Path
) -> None:
    name, blob = _packed(tmp_path, marker, "byhash")
    path_before, meta_before = list(sys.path), list(sys.meta_path)
    factory = load_bundle(name, Fetcher(blob), TrustPolicy.of(models=[name]), args={"hidden": 8})
    model = factory()
    assert isinstance(model, torch.nn.Module)
    assert model(torch.zeros(2, 64)).shape == (2, 10)
    assert model[0][0].out_features == 8  # the factory got the job's args
    assert marker.read_text() == "imported"
    assert sorted(modules_named("byhash")) == [f"{package_name(name)}.model_byhash"]
    assert f"{package_name(name)}.layers" in sys.modules
    assert sys.path == path_before
    assert sys.meta_path == meta_before


def test_a_bundle_signed_by_a_trusted_key_loads(tmp_path: Path, marker: Path) -> None:
    name, blob = _packed(tmp_path, marker, "signed")
    signature = sign_bundle(name, POSTER_KEY)
    signer = bundle_signer(name, signature)
    assert signer is not None
    loader = trusted_bundle_loader(
        TrustPolicy.of(signers=[signer]), Fetcher(blob), signatures={name: signature}
    )
    assert isinstance(loader(name)(), torch.nn.Module)
    # A signature over another bundle does not vouch for this one.
    other = sign_bundle("cd" * 32, POSTER_KEY)
    with pytest.raises(UntrustedBundle):
        load_bundle(name, Fetcher(blob), TrustPolicy.of(signers=[signer]), signature=other)


def test_two_bundles_with_the_same_module_names_do_not_clash(tmp_path: Path) -> None:
    names = []
    for width in (3, 5):
        folder = tmp_path / f"w{width}"
        folder.mkdir()
        (folder / "manifest.json").write_text('{"format": 1, "factory": "net:build"}')
        (folder / "net.py").write_text(
            f"from torch import nn\n\ndef build():\n    return nn.Linear(2, {width})\n"
        )
        blob = pack_bundle(folder)
        names.append((bundle_hash(blob), blob))
    built = [
        load_bundle(n, Fetcher(b), TrustPolicy.of(models=[n]))().out_features for n, b in names
    ]
    assert built == [3, 5]
    assert "net" not in sys.modules


def test_a_blob_that_does_not_match_its_hash_is_refused_before_import(
    tmp_path: Path, marker: Path
) -> None:
    name, _ = _packed(tmp_path, marker, "swapped")
    _, other = _packed(tmp_path, tmp_path / "other.marker", "other")
    with pytest.raises(BundleError, match="the blob fetched has keccak256"):
        load_bundle(name, lambda _: other, TrustPolicy.of(models=[name]))
    assert not marker.exists()
    assert not (tmp_path / "other.marker").exists()


def test_a_bundle_failing_on_import_leaves_no_module_behind(tmp_path: Path) -> None:
    folder = _bundle(tmp_path)
    (folder / "model.py").write_text("from . import helper\n\ndef build(): pass\n")
    (folder / "helper.py").write_text("raise RuntimeError('broken on purpose')\n")
    blob = pack_bundle(folder)
    name = bundle_hash(blob)
    with pytest.raises(BundleError, match="importing its code failed: RuntimeError"):
        load_bundle(name, Fetcher(blob), TrustPolicy.of(models=[name]))
    assert [m for m in sys.modules if m.startswith(package_name(name))] == []


def test_a_factory_that_returns_no_module_is_refused(tmp_path: Path) -> None:
    blob = pack_bundle(_bundle(tmp_path))
    name = bundle_hash(blob)
    factory = load_bundle(name, Fetcher(blob), TrustPolicy.of(models=[name]))
    with pytest.raises(BundleError, match=r"returned NoneType, not a torch\.nn\.Module"):
        factory()


def test_refusals_are_training_errors_so_a_model_builder_refuses_the_task(
    tmp_path: Path,
) -> None:
    blob = pack_bundle(_bundle(tmp_path))
    name = bundle_hash(blob)
    with pytest.raises(TrainingError):
        load_bundle(name, Fetcher(blob), TrustPolicy())
    with pytest.raises(TrainingError):
        load_bundle(name, lambda _: b"{}", TrustPolicy.of(models=[name]))


def test_an_unreadable_folder_is_refused_not_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _bundle(tmp_path)
    private = folder / "private"
    private.mkdir()
    (private / "part.py").write_text("x = 1\n")
    scandir = os.scandir

    def refusing(path: Any) -> Any:  # a folder this user may not list
        if Path(path) == private:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    with pytest.raises(BundleError, match=r"cannot read the bundle .*Permission denied"):
        pack_bundle(folder)

"""Model bundles: a poster's own model as Python source, content-addressed like every blob.

A job whose model is not in the zoo names a *bundle*: a directory of Python source files and a
``manifest.json`` naming the function that builds the ``torch.nn.Module``::

    my_model/
        manifest.json      {"format": 1, "factory": "model:build"}
        model.py           def build(width: int = 64) -> nn.Module: ...
        layers/__init__.py (subpackages allowed; import them relatively: ``from .layers import x``)

:func:`pack_bundle` turns the directory into one canonical blob, the UTF-8 JSON document
``{"files": {PATH: SOURCE, ...}, "manifest": {"factory": ..., "files": [PATH, ...],
"format": 1}}`` with sorted keys and no whitespace: the same sources give the same bytes on every
machine (no timestamps, modes or owners), so the blob's keccak256 (:func:`bundle_hash`) names the
code exactly. The job configuration's ``model`` entry names that hash (``{"kind": "bundle",
"bundle": HASH, "args": {...}, ...}``), and the blob travels through the blob store like a model.

Packing refuses what would make a bundle ambiguous or unsafe to unpack: files other than ``.py``
sources and the manifest, symbolic links, names that are not Python identifiers (so no ``..``,
absolute paths or separators other than ``/``), sources that are not UTF-8, and sizes above
:data:`MAX_FILES`, :data:`MAX_FILE_BYTES` and :data:`MAX_BUNDLE_BYTES`. ``__pycache__``
directories are skipped. Parsing a blob (:func:`read_bundle`) checks the same rules and that the
bytes are the canonical packing, without running anything.

Loading runs the poster's code, so it happens only through :func:`load_bundle` (or
:func:`trusted_bundle_loader`), in this order: the hash is checked against the machine's
:class:`~fedrelay.training.trust.TrustPolicy` (refused: nothing was fetched or imported), the blob
is fetched and its keccak256 compared with the hash, the blob is parsed, and only then are its
modules imported, all of them, under the private package ``_fedrelay_bundle_<hash>`` (so two
bundles never clash, and a bundle's module names never shadow the user's). ``sys.path`` is never
touched: an importer answering only that package's names is on ``sys.meta_path`` for the
duration of the import and removed afterwards; the modules stay in ``sys.modules`` (a later load
of the same hash reuses them), and code inside the bundle imports its own modules relatively.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import keyword
import linecache
import os
import re
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from fedrelay.protocol.hashing import BLOB_NAME, blob_name
from fedrelay.training.errors import TrainingError
from fedrelay.training.trust import TrustPolicy

if TYPE_CHECKING:
    from torch import nn

    from fedrelay.training.torch_trainer import ModelFactory

__all__ = [
    "FORMAT",
    "MANIFEST",
    "MAX_BUNDLE_BYTES",
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "Bundle",
    "BundleError",
    "BundleRef",
    "bundle_hash",
    "bundle_ref",
    "load_bundle",
    "loader_for_model",
    "pack_bundle",
    "package_name",
    "read_bundle",
    "trusted_bundle_loader",
]

#: The bundle format this code reads and writes.
FORMAT = 1
#: The manifest's file name in a bundle directory.
MANIFEST = "manifest.json"
#: At most this many source files in a bundle.
MAX_FILES = 256
#: At most this many bytes per source file.
MAX_FILE_BYTES = 1 << 20
#: At most this many bytes in a packed bundle.
MAX_BUNDLE_BYTES = 8 << 20
#: Directories skipped while packing (Python's bytecode caches).
SKIPPED_DIRECTORIES = frozenset({"__pycache__"})

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FACTORY = re.compile(
    r"([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*):([A-Za-z_][A-Za-z0-9_]*)"
)
_MAX_DEPTH = 8
_PACKAGE_PREFIX = "_fedrelay_bundle_"
_lock = threading.RLock()


class BundleError(TrainingError):
    """A bundle cannot be packed, parsed or loaded; the message says which file and why.

    A :class:`~fedrelay.training.errors.TrainingError`: a job whose model cannot be built."""


@dataclass(frozen=True)
class Bundle:
    """A parsed bundle: its sources and the factory the manifest names.

    Attributes:
        factory: ``"module:function"`` (module dotted, relative to the bundle's root).
        files: Source text by path (``/``-separated, relative to the bundle's root).
    """

    factory: str
    files: Mapping[str, str] = field(default_factory=dict)

    @property
    def factory_module(self) -> str:
        """The factory's module, dotted, relative to the bundle's root."""
        return self.factory.partition(":")[0]

    @property
    def factory_function(self) -> str:
        """The factory's function name in its module."""
        return self.factory.partition(":")[2]

    def manifest(self) -> dict[str, Any]:
        """The manifest as packed: format, factory and the sorted file list."""
        return {"factory": self.factory, "files": sorted(self.files), "format": FORMAT}

    def to_bytes(self) -> bytes:
        """The canonical blob (sorted keys, no whitespace, UTF-8)."""
        document = {"files": dict(sorted(self.files.items())), "manifest": self.manifest()}
        return json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")


@dataclass(frozen=True)
class BundleRef:
    """What a job's model entry says about its bundle: the hash, and the poster's signature.

    Attributes:
        bundle: The bundle blob's name (64 lowercase hex characters).
        signature: The poster's signature over the hash (see
            :func:`~fedrelay.training.trust.sign_bundle`), or empty.
    """

    bundle: str
    signature: str = ""


def bundle_ref(model: object) -> BundleRef | None:
    """The bundle a job's ``model`` entry names, or None when it is a built-in model.

    Read by attribute (``kind``, ``bundle``, ``signature``), so it applies to the configuration's
    model entry whatever its class.
    """
    if getattr(model, "kind", None) != "bundle":
        return None
    return BundleRef(str(getattr(model, "bundle", "")), str(getattr(model, "signature", "") or ""))


def bundle_hash(blob: bytes) -> str:
    """A packed bundle's name: the keccak256 of its bytes (64 lowercase hex), as every blob's."""
    return blob_name(blob)


def package_name(bundle: str) -> str:
    """The private package the modules of bundle ``bundle`` are imported under."""
    return _PACKAGE_PREFIX + bundle


# --- packing -----------------------------------------------------------------------------------


def _check_path(path: str) -> None:
    parts = path.split("/")
    if len(parts) > _MAX_DEPTH:
        raise BundleError(f"{path}: nested deeper than {_MAX_DEPTH} levels")
    *folders, name = parts
    stem, dot, suffix = name.rpartition(".")
    if not dot or suffix != "py":
        raise BundleError(f"{path}: only Python sources (.py) and {MANIFEST} may be in a bundle")
    for part in (*folders, stem):
        if not _IDENTIFIER.fullmatch(part) or keyword.iskeyword(part):
            raise BundleError(
                f"{path}: {part!r} is not a Python identifier (every folder and module of a "
                "bundle must be importable; no '..', absolute paths or other separators)"
            )


def _check_factory(factory: object, files: Mapping[str, str]) -> str:
    if not isinstance(factory, str) or not _FACTORY.fullmatch(factory):
        raise BundleError(
            "the manifest's factory must be 'module:function' (e.g. 'model:build'), "
            f"got {factory!r}"
        )
    module = factory.partition(":")[0].replace(".", "/")
    if f"{module}.py" not in files and f"{module}/__init__.py" not in files:
        raise BundleError(f"the manifest's factory {factory!r} names a module the bundle lacks")
    return factory


def _read_manifest(data: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{MANIFEST} is not UTF-8 JSON: {exc}") from None
    return _check_manifest(manifest)


def _check_manifest(manifest: object) -> dict[str, Any]:
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST} must be a JSON object")
    unknown = sorted(set(manifest) - {"format", "factory", "files"})
    if unknown:
        raise BundleError(f"{MANIFEST}: unknown keys {unknown} (known: format, factory, files)")
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{MANIFEST}: format must be {FORMAT}, got {manifest.get('format')!r}")
    return manifest


def _source(path: str, data: bytes) -> str:
    if len(data) > MAX_FILE_BYTES:
        raise BundleError(f"{path}: {len(data)} bytes, above the limit of {MAX_FILE_BYTES}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"{path}: not UTF-8 text") from None


def _unreadable(error: OSError) -> None:
    raise error  # a folder that cannot be listed must not silently drop out of the bundle


def _walk(root: Path) -> tuple[bytes | None, dict[str, bytes]]:
    """The manifest's bytes and every other file's bytes by relative path (links refused)."""
    manifest: bytes | None = None
    found: dict[str, bytes] = {}
    for folder, directories, names in os.walk(root, onerror=_unreadable, followlinks=False):
        here = Path(folder)
        for name in sorted(directories):
            if (here / name).is_symlink():
                raise BundleError(f"{(here / name).relative_to(root)}: symbolic links are refused")
        directories[:] = sorted(d for d in directories if d not in SKIPPED_DIRECTORIES)
        for name in sorted(names):
            path = here / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                raise BundleError(f"{relative}: symbolic links are refused")
            if not path.is_file():
                raise BundleError(f"{relative}: not a regular file")
            if relative == MANIFEST:
                manifest = path.read_bytes()
                continue
            _check_path(relative)
            if len(found) >= MAX_FILES:
                raise BundleError(f"more than {MAX_FILES} source files")
            if path.stat().st_size > MAX_FILE_BYTES:
                raise BundleError(f"{relative}: above the limit of {MAX_FILE_BYTES} bytes")
            found[relative] = path.read_bytes()
    return manifest, found


def pack_bundle(directory: Path | str) -> bytes:
    """The canonical blob of the bundle in ``directory``.

    Args:
        directory: A folder holding ``manifest.json`` (``format`` and ``factory``; ``files``
            optional, and if given it must list exactly the folder's sources) and ``.py`` files.

    Returns:
        The blob; its name is :func:`bundle_hash` of it.

    Raises:
        BundleError: The folder is missing or holds a link, a file that is not a ``.py`` source,
            a name that is not importable, a source that is not UTF-8, too many or too large
            files; or the manifest is missing, malformed, or names a module the bundle lacks.
    """
    root = Path(directory)
    if not root.is_dir():
        raise BundleError(f"{root}: not a directory")
    try:
        manifest_bytes, raw = _walk(root)
    except OSError as exc:
        raise BundleError(f"cannot read the bundle in {root}: {exc}") from None
    if manifest_bytes is None:
        raise BundleError(f"{root}: no {MANIFEST} (it names the factory: 'module:function')")
    manifest = _read_manifest(manifest_bytes)
    files = {path: _source(path, data) for path, data in raw.items()}
    if not files:
        raise BundleError(f"{root}: no Python sources")
    listed = manifest.get("files")
    if listed is not None and sorted(listed) != sorted(files):
        raise BundleError(
            f"{MANIFEST} lists files {sorted(listed)}, the folder holds {sorted(files)}"
        )
    bundle = Bundle(_check_factory(manifest.get("factory"), files), files)
    blob = bundle.to_bytes()
    if len(blob) > MAX_BUNDLE_BYTES:
        raise BundleError(f"the packed bundle is {len(blob)} bytes, above {MAX_BUNDLE_BYTES}")
    return blob


def read_bundle(blob: bytes) -> Bundle:
    """The bundle in ``blob``, checked as :func:`pack_bundle` would; nothing of it runs.

    Raises:
        BundleError: The blob is too large, not a bundle document, breaks a packing rule, or is
            not the canonical packing of its contents.
    """
    if len(blob) > MAX_BUNDLE_BYTES:
        raise BundleError(f"the bundle blob is {len(blob)} bytes, above {MAX_BUNDLE_BYTES}")
    try:
        document = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"not a model bundle (UTF-8 JSON): {exc}") from None
    if not isinstance(document, dict) or set(document) != {"files", "manifest"}:
        raise BundleError("not a model bundle: expected the keys 'files' and 'manifest'")
    files, manifest = document["files"], document["manifest"]
    if not isinstance(files, dict) or not isinstance(manifest, dict):
        raise BundleError("not a model bundle: 'files' and 'manifest' must be objects")
    if len(files) > MAX_FILES:
        raise BundleError(f"more than {MAX_FILES} source files")
    for path, source in files.items():
        if not isinstance(source, str):
            raise BundleError(f"{path}: the source must be text")
        _check_path(path)
        _source(path, source.encode("utf-8"))
    _check_manifest(manifest)
    bundle = Bundle(_check_factory(manifest.get("factory"), files), files)
    if bundle.to_bytes() != blob:
        raise BundleError("the bundle blob is not in canonical form (pack it with pack_bundle)")
    return bundle


# --- loading -----------------------------------------------------------------------------------


class _BundleImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and executes one bundle's modules from memory, under its private package."""

    def __init__(self, package: str, bundle: str, files: Mapping[str, str]) -> None:
        self.package = package
        self.bundle = bundle
        self.files = files

    def _locate(self, fullname: str) -> tuple[str, str, bool] | None:
        """``(path, source, is_package)`` of module ``fullname``, or None if not the bundle's."""
        if fullname == self.package:
            return "__init__.py", self.files.get("__init__.py", ""), True
        if not fullname.startswith(self.package + "."):
            return None
        relative = fullname[len(self.package) + 1 :].replace(".", "/")
        if f"{relative}.py" in self.files:
            return f"{relative}.py", self.files[f"{relative}.py"], False
        init = f"{relative}/__init__.py"
        if init in self.files:
            return init, self.files[init], True
        if any(path.startswith(relative + "/") for path in self.files):
            return init, "", True  # a folder without __init__.py is a package all the same
        return None

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        located = self._locate(fullname)
        if located is None:
            return None
        spec = importlib.util.spec_from_loader(
            fullname, self, origin=self._filename(located[0]), is_package=located[2]
        )
        if spec is not None:
            spec.has_location = False
        return spec

    def _filename(self, path: str) -> str:
        return f"<bundle {self.bundle[:16]}>/{path}"

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        located = self._locate(module.__name__)
        if located is None:  # pragma: no cover - find_spec answered for this name
            raise ImportError(f"{module.__name__} is not in bundle {self.bundle}")
        path, source, _ = located
        filename = self._filename(path)
        # Tracebacks show the bundle's source lines.
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        module.__file__ = filename
        exec(compile(source, filename, "exec", dont_inherit=True), module.__dict__)  # noqa: S102


def _modules(package: str, files: Mapping[str, str]) -> list[str]:
    names = []
    for path in sorted(files):
        dotted = path.removesuffix(".py").replace("/", ".")
        dotted = dotted.removesuffix("__init__").rstrip(".")
        names.append(f"{package}.{dotted}" if dotted else package)
    return names


def _forget(package: str) -> None:
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        del sys.modules[name]


def _import(bundle: str, parsed: Bundle) -> ModuleType:
    """Import every module of ``parsed`` under its private package; the factory's module."""
    package = package_name(bundle)
    with _lock:
        if package not in sys.modules:
            importer = _BundleImporter(package, bundle, parsed.files)
            sys.meta_path.insert(0, importer)
            try:
                for name in _modules(package, parsed.files):
                    importlib.import_module(name)
            except BaseException as exc:
                _forget(package)
                if isinstance(exc, Exception):
                    raise BundleError(
                        f"model bundle {bundle}: importing its code failed: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                raise
            finally:
                sys.meta_path.remove(importer)
        module_name = package + "." + parsed.factory_module
        return sys.modules[module_name]


def load_bundle(
    bundle: str,
    fetch_blob: Callable[[str], bytes],
    trust: TrustPolicy,
    *,
    args: Mapping[str, object] | None = None,
    signature: str = "",
) -> ModelFactory:
    """A factory building the model of bundle ``bundle``, if this machine trusts it.

    Nothing of the bundle is fetched or imported before ``trust`` allows the hash (by itself or
    through the signer of ``signature``).

    Args:
        bundle: The bundle's hash (64 lowercase hex), as the job's model entry names it.
        fetch_blob: Returns a blob's bytes by name.
        trust: This machine's allowlist.
        args: Keyword arguments for the manifest's factory.
        signature: The poster's signature over the hash (empty: none).

    Returns:
        A callable with no arguments that calls the bundle's factory with ``args`` and checks
        that it returned a ``torch.nn.Module``.

    Raises:
        UntrustedBundle: The hash is not trusted here (nothing was fetched or imported).
        BundleError: The blob's keccak256 differs from ``bundle``, the blob is not a valid
            bundle, its code failed on import, or its factory is missing or not callable.
    """
    if not BLOB_NAME.fullmatch(bundle):
        raise BundleError(f"{bundle!r} is not a bundle hash (64 lowercase hex characters)")
    trust.require(bundle, signature)
    blob = fetch_blob(bundle)
    if bundle_hash(blob) != bundle:
        raise BundleError(
            f"model bundle {bundle}: the blob fetched has keccak256 {bundle_hash(blob)}"
        )
    parsed = read_bundle(blob)
    module = _import(bundle, parsed)
    factory = getattr(module, parsed.factory_function, None)
    if not callable(factory):
        raise BundleError(
            f"model bundle {bundle}: {parsed.factory} is not a function of its module"
        )
    keywords = dict(args or {})

    def build() -> nn.Module:
        from torch import nn

        try:
            model = factory(**keywords)
        except TypeError as exc:
            raise BundleError(
                f"model bundle {bundle}: {parsed.factory}(**{keywords}) failed: {exc}"
            ) from exc
        if not isinstance(model, nn.Module):
            raise BundleError(
                f"model bundle {bundle}: {parsed.factory} returned {type(model).__name__}, "
                "not a torch.nn.Module"
            )
        return model

    return build


def trusted_bundle_loader(
    trust: TrustPolicy,
    fetch_blob: Callable[[str], bytes],
    *,
    args: Mapping[str, object] | None = None,
    signatures: Mapping[str, str] | None = None,
) -> Callable[[str], ModelFactory]:
    """The ``bundle_loader`` that :func:`fedrelay.training.models.build_factory` calls.

    Args:
        trust: This machine's allowlist.
        fetch_blob: Returns a blob's bytes by name.
        args: Keyword arguments of the bundle's factory (the job's ``model.args``).
        signatures: The poster's signature by bundle hash (the job's ``model.signature``).

    Returns:
        ``loader(hash) -> ModelFactory``, which refuses untrusted hashes before fetching or
        importing anything (see :func:`load_bundle`).
    """
    known = dict(signatures or {})

    def loader(bundle: str) -> ModelFactory:
        return load_bundle(bundle, fetch_blob, trust, args=args, signature=known.get(bundle, ""))

    return loader


def loader_for_model(
    model: object, trust: TrustPolicy, fetch_blob: Callable[[str], bytes]
) -> Callable[[str], ModelFactory]:
    """The trusted ``bundle_loader`` for a job's ``model`` entry: its ``args`` and signature.

    A built-in model entry gets a loader that is never called by the model builder (and refuses
    like any other if it is).
    """
    ref = bundle_ref(model)
    args = getattr(model, "args", None) if ref is not None else None
    return trusted_bundle_loader(
        trust,
        fetch_blob,
        args=dict(args) if isinstance(args, Mapping) else None,
        signatures={ref.bundle: ref.signature} if ref is not None else None,
    )

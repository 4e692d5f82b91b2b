"""Build the Solana worker program: clang-14 (BPF target) per C file, then the project's linker.

Usage: python programs/build.py [--out DIR] [--force]

The result is `programs/build/fedrelay_worker.so`. A stamp holding the hash of every input
(sources, headers, linker, flags) makes a rebuild with unchanged inputs a no-op.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROGRAMS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(PROGRAMS_DIR))

from sbflink import link_objects  # noqa: E402

SOURCE_DIR = PROGRAMS_DIR / "worker" / "src"
INCLUDE_DIR = PROGRAMS_DIR / "worker" / "include"
DEFAULT_OUT = PROGRAMS_DIR / "build"
PROGRAM_NAME = "fedrelay_worker.so"
CFLAGS = (
    "-target",
    "bpf",
    "-O2",
    "-mcpu=v2",
    "-ffreestanding",
    "-fno-builtin",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-std=c11",
)


class BuildError(RuntimeError):
    """The compiler or the linker rejected the program."""


def find_clang() -> str:
    """The clang able to target BPF: $FEDRELAY_CLANG, else clang-14, else clang."""
    for candidate in (os.environ.get("FEDRELAY_CLANG"), "clang-14", "clang"):
        if candidate and shutil.which(candidate):
            return candidate
    raise BuildError("clang-14 not found; install it with `apt-get install clang-14`")


def _inputs() -> list[Path]:
    linker = sorted((PROGRAMS_DIR / "sbflink").glob("*.py"))
    return sorted(SOURCE_DIR.glob("*.c")) + sorted(INCLUDE_DIR.glob("*.h")) + linker


def _fingerprint(clang: str) -> str:
    digest = hashlib.sha256(" ".join((clang, *CFLAGS)).encode())
    for path in _inputs():
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def compile_sources(clang: str, work: Path) -> list[Path]:
    """Compile every C file of the worker program into `work`; return the object paths."""
    objects = []
    for source in sorted(SOURCE_DIR.glob("*.c")):
        obj = work / (source.stem + ".o")
        cmd = [clang, *CFLAGS, f"-I{INCLUDE_DIR}", "-c", str(source), "-o", str(obj)]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BuildError(f"clang failed on {source.name}:\n{result.stderr}")
        objects.append(obj)
    return objects


def build(out_dir: Path = DEFAULT_OUT, force: bool = False) -> Path:
    """Compile and link the worker program unless an up-to-date build exists.

    Args:
        out_dir: Directory that receives the `.so` and its stamp.
        force: Rebuild even when the stamp matches.

    Returns:
        The path of the linked program.
    """
    clang = find_clang()
    target = out_dir / PROGRAM_NAME
    stamp = out_dir / (PROGRAM_NAME + ".stamp")
    fingerprint = _fingerprint(clang)
    if not force and target.exists() and stamp.exists() and stamp.read_text() == fingerprint:
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fedrelay-sbf-") as tmp:
        objects = compile_sources(clang, Path(tmp))
        program = link_objects([o.read_bytes() for o in objects], [o.name for o in objects])
    partial = target.with_suffix(".so.partial")
    partial.write_bytes(program.elf_bytes)
    partial.replace(target)
    stamp.write_text(fingerprint)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    try:
        path = build(args.out, args.force)
    except BuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

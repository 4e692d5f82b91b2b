"""Rewrite the shared JSON vectors of this folder from ``support.vectors``.

Usage: ``.venv/bin/python tests/vectors/generate.py`` (from the repository root). Only needed when
the protocol or the vector set changes; a unit test fails while the files are stale.
"""

from __future__ import annotations

import json
from pathlib import Path

from support.vectors import build_payload_vectors, build_vaa_vectors

HERE = Path(__file__).resolve().parent


def render(content: object) -> str:
    """Return the canonical text of a vector file: 2-space indent, trailing newline."""
    return json.dumps(content, indent=2) + "\n"


def main() -> None:
    """Write payloads.json and vaas.json next to this script."""
    (HERE / "payloads.json").write_text(render(build_payload_vectors()))
    (HERE / "vaas.json").write_text(render(build_vaa_vectors()))


if __name__ == "__main__":
    main()

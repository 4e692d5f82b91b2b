"""Rewrite the shared JSON vectors of this folder (``support.vectors``, ``support.wire_vectors``).

Usage: ``.venv/bin/python tests/vectors/generate.py`` (from the repository root). Only needed when
the protocol or the vector set changes; a unit test fails while the files are stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# tests/support is the package `support`, as under pytest (pythonpath = ["tests"]).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.threshold_vectors import build_threshold_vectors
from support.vectors import build_payload_vectors, build_vaa_vectors
from support.wire_vectors import build_data_vectors, build_proof_vectors, build_secagg_vectors

HERE = Path(__file__).resolve().parent


def render(content: object) -> str:
    """Return the canonical text of a vector file: 2-space indent, trailing newline."""
    return json.dumps(content, indent=2) + "\n"


def main() -> None:
    """Write payloads.json, vaas.json, secagg.json, proofs.json, data.json and threshold.json
    next to this script."""
    (HERE / "payloads.json").write_text(render(build_payload_vectors()))
    (HERE / "vaas.json").write_text(render(build_vaa_vectors()))
    (HERE / "secagg.json").write_text(render(build_secagg_vectors()))
    (HERE / "proofs.json").write_text(render(build_proof_vectors()))
    (HERE / "data.json").write_text(render(build_data_vectors()))
    (HERE / "threshold.json").write_text(render(build_threshold_vectors()))


if __name__ == "__main__":
    main()

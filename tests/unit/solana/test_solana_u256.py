"""programs/worker/src/u256.c on the host: the shared mulmod cases and random products mod Q.

The program runs the same code in every version-2 verification (tests/integration/solana/
test_solana_threshold.py); this checks the arithmetic alone, on many more inputs.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
WORKER = ROOT / "programs" / "worker"
CASES = json.loads((ROOT / "tests" / "vectors" / "threshold.json").read_text())["mulmod"]
Q = int(json.loads((ROOT / "tests" / "vectors" / "threshold.json").read_text())["curve_order"], 16)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("clang-14") or shutil.which("cc")
    if compiler is None:  # the project installs clang-14 for the Solana program: never skipped
        pytest.fail("no C compiler found (clang-14 or cc); `make setup` installs clang-14")
    binary = tmp_path_factory.mktemp("u256") / "u256"
    subprocess.run(
        [
            compiler,
            "-O2",
            "-Wall",
            "-Werror",
            "-std=c11",
            "-Wno-macro-redefined",
            f"-I{WORKER / 'include'}",
            str(Path(__file__).with_name("u256_harness.c")),
            str(WORKER / "src" / "u256.c"),
            "-o",
            str(binary),
        ],
        check=True,
        capture_output=True,
    )
    return binary


def _run(binary: Path, pairs: list[tuple[int, int]]) -> list[tuple[int, bool, bool]]:
    text = "".join(f"{a:064x} {b:064x}\n" for a, b in pairs)
    out = subprocess.run([str(binary)], input=text, capture_output=True, text=True, check=True)
    rows = [line.split() for line in out.stdout.splitlines()]
    return [(int(p, 16), below == "1", is_zero == "1") for p, below, is_zero in rows]


def test_the_shared_mulmod_cases(harness: Path) -> None:
    pairs = [(int(c["a"], 16), int(c["b"], 16)) for c in CASES]
    results = _run(harness, pairs)
    assert [r[0] for r in results] == [int(c["product"], 16) for c in CASES]


def test_random_products_and_the_range_checks(harness: Path) -> None:
    rng = random.Random(18)
    edges = [0, 1, 2, Q - 1, Q, Q + 1, 2**256 - 1, 2**255, 2**128 - 1, 2**224]
    values = edges + [rng.getrandbits(256) for _ in range(300)]
    pairs = [(a, b) for a in edges for b in edges] + [
        (values[i], values[-1 - i]) for i in range(len(values))
    ]
    for (a, b), (product, below, is_zero) in zip(pairs, _run(harness, pairs), strict=True):
        assert product == a * b % Q, (hex(a), hex(b))
        assert below == (a < Q)
        assert is_zero == (product == 0)

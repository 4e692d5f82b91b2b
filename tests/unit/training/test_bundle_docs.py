"""The bundle example and the trust file of docs/learning.md ("Custom models and trust") work as
written: the example packs, loads once trusted and builds a model that runs; the trust file
parses to the hash and signer it shows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from fedrelay.training.bundles import bundle_hash, load_bundle, pack_bundle
from fedrelay.training.trust import TrustPolicy, read_trust_file

DOC = Path(__file__).resolve().parents[3] / "docs" / "learning.md"


def _section() -> str:
    text = DOC.read_text()
    start = text.index("## Custom models and trust")
    return text[start : text.index("\n## ", start + 1)]


def _blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


def test_the_documented_bundle_packs_loads_and_builds_a_model(tmp_path: Path) -> None:
    section = _section()
    manifest = re.search(r"manifest\.json\s+(\{.*?\})\n", section)
    assert manifest is not None
    sources = {block.splitlines()[0].removeprefix("# ").split(":")[0]: block
               for block in _blocks(section, "python")}  # fmt: skip
    assert set(sources) == {"net.py", "blocks/__init__.py"}
    folder = tmp_path / "digits_net"
    (folder / "blocks").mkdir(parents=True)
    (folder / "manifest.json").write_text(manifest.group(1))
    for path, source in sources.items():
        (folder / path).write_text(source)
    args = json.loads(re.search(r"--bundle-args\s+'(\{.*?\})'", section).group(1))  # type: ignore[union-attr]
    blob = pack_bundle(folder)
    name = bundle_hash(blob)
    model = load_bundle(name, {name: blob}.__getitem__, TrustPolicy.of(models=[name]), args=args)()
    assert model(torch.zeros(3, 64)).shape == (3, 10)
    assert model[0].out_features == args["hidden"]


def test_the_documented_trust_file_parses(tmp_path: Path) -> None:
    [example] = re.findall(r"```\n(# the CNN.*?)```", _section(), re.DOTALL)
    path = tmp_path / "trusted"
    path.write_text(example)
    policy = read_trust_file(path)
    assert len(policy.hashes) == 1
    assert policy.signers == {"0x90f8bf6a479f320ead074411a4b0e7944ea8c9c1"}

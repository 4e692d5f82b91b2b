"""The chains file: what the chart renders loads; each kind of mistake gets an error naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fedrelay.relayer.chains_file import ChainsFileError, load_chains, parse_chains

CHART_VALUES = Path(__file__).resolve().parents[3] / "helm" / "fedrelay" / "values.yaml"

EVM = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def _document(**overrides: object) -> str:
    chain = {
        "name": "coordinator", "wormhole_chain_id": 2, "kind": "evm",
        "rpc_url": "http://anvil:8545", "address": EVM, "finality": "latest",
    }  # fmt: skip
    chain.update(overrides)
    return yaml.safe_dump({"chains": [chain]})


def test_the_chains_the_chart_renders_load() -> None:
    # configmap-chains.yaml renders each entry of `chains` with snake_case keys.
    values = yaml.safe_load(CHART_VALUES.read_text())
    rendered = {
        "chains": [
            {"name": c["name"], "wormhole_chain_id": c["wormholeChainId"], "kind": c["kind"],
             "rpc_url": c["rpcUrl"], "address": c["address"], "finality": c["finality"]}
            for c in values["chains"]
        ]
    }  # fmt: skip
    chains = parse_chains(yaml.safe_dump(rendered))
    assert [c.name for c in chains.chains] == [c["name"] for c in values["chains"]]
    assert chains.named("worker-solana").kind == "solana"
    assert chains.by_wormhole_id(4) is not None
    assert chains.by_wormhole_id(4) == chains.named("worker-evm")
    assert chains.by_wormhole_id(99) is None


def test_a_file_is_read_and_confirmations_are_a_finality(tmp_path: Path) -> None:
    path = tmp_path / "chains.yaml"
    path.write_text(_document(finality=12))
    [chain] = load_chains(path).chains
    assert (chain.name, chain.wormhole_chain_id, chain.finality) == ("coordinator", 2, 12)


def test_a_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ChainsFileError, match=r"cannot read the chains file .*absent\.yaml"):
        load_chains(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("chains: [", "not valid YAML"),
        ("- just a list", "must be a mapping with a 'chains' list"),
        ("chains: []", "chains: .*at least 1"),
        (_document(name="Coordinator"), r"chains\[0\].name: must be a DNS label"),
        (_document(wormhole_chain_id=0), r"chains\[0\].wormhole_chain_id: .*greater than or equal"),
        (_document(kind="cosmos"), r"chains\[0\].kind: .*'evm' or 'solana'"),
        (_document(rpc_url="anvil:8545"), r"chains\[0\].rpc_url: must start with http"),
        (_document(address="0x1234"), "address of an evm chain is 0x"),
        (_document(finality="confirmed"), "finality of an evm chain is one of latest, safe"),
        (_document(finality=-1), r"chains\[0\].finality"),
        (_document(kind="solana"), "address of a solana chain is a base58 program id"),
        (_document(colour="blue"), r"chains\[0\].colour: Extra inputs are not permitted"),
        (_document().replace(f"'{EVM}'", "0x12"), "quote it"),
    ],
)
def test_each_mistake_is_named(text: str, expected: str) -> None:
    with pytest.raises(ChainsFileError, match=expected):
        parse_chains(text)


def test_names_and_chain_ids_are_unique() -> None:
    one = yaml.safe_load(_document())["chains"][0]
    twice = yaml.safe_dump({"chains": [one, {**one, "wormhole_chain_id": 4}]})
    with pytest.raises(ChainsFileError, match="its own name; repeated: coordinator"):
        parse_chains(twice)
    same_id = yaml.safe_dump({"chains": [one, {**one, "name": "other"}]})
    with pytest.raises(ChainsFileError, match="its own wormhole_chain_id; repeated: 2"):
        parse_chains(same_id)


def test_an_unknown_chain_name_lists_the_known_ones() -> None:
    chains = parse_chains(_document())
    with pytest.raises(ChainsFileError, match=r"no chain named 'moon' .*known: coordinator"):
        chains.named("moon")

"""The devnet's state files: devnet.json round trip, a chains file the relayer loads, bad input."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from fedrelay.adapters.devnet.network import DevnetPorts, DevnetSettings
from fedrelay.adapters.devnet.state import (
    ChainInfo,
    DevnetError,
    DevnetInfo,
    DevnetStateError,
    WorkerKey,
    new_evm_key,
    new_solana_keypair,
    process_alive,
    read_state,
    remove_state,
    write_state,
)
from fedrelay.relayer.chains_file import parse_chains

EVM = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
PROGRAM = "BFCm7vWEc34uQMuYKETs8vJW7HqiThnweL7Zh1fxrS1v"


def _info(state_dir: Path) -> DevnetInfo:
    return DevnetInfo(
        state_dir=str(state_dir),
        supervisor_pid=os.getpid(),
        chains=(
            ChainInfo(
                "coordinator", "evm", 2, "http://127.0.0.1:8545", EVM, "latest", 11, 31337, EVM
            ),
            ChainInfo(
                "worker-evm", "evm", 4, "http://127.0.0.1:8546", EVM, "latest", 12, 31338, EVM
            ),
            ChainInfo(
                "worker-solana",
                "solana",
                1,
                "http://127.0.0.1:8899",
                PROGRAM,
                "confirmed",
                os.getpid(),
            ),
        ),
        guardian_set_index=0,
        guardian_addresses=("0xbefa429d57cd18b7f8a4d91a2da9ab4af05d0fbe",),
        guardian_key_files=(str(state_dir / "keys" / "guardian-0.key"),),
        accounts={"owner": EVM},
        key_files={"owner": str(state_dir / "keys" / "owner.key")},
        workers=(WorkerKey("worker-evm", "k", EVM, "p", EVM),),
        chains_file=str(state_dir / "chains.yaml"),
        env_file=str(state_dir / "devnet.env"),
    )


def test_state_round_trips_and_the_chains_file_is_what_the_relayer_loads(tmp_path: Path) -> None:
    info = _info(tmp_path)
    write_state(info)
    assert read_state(tmp_path) == info
    chains = parse_chains((tmp_path / "chains.yaml").read_text())
    assert [(c.name, c.wormhole_chain_id, c.kind, c.address) for c in chains.chains] == [
        ("coordinator", 2, "evm", EVM), ("worker-evm", 4, "evm", EVM),
        ("worker-solana", 1, "solana", PROGRAM),
    ]  # fmt: skip
    assert info.pids == (os.getpid(), 11, 12)
    assert info.chain("worker-evm").evm_chain_id == 31338
    with pytest.raises(DevnetStateError, match="no chain named 'cosmos'"):
        info.chain("cosmos")
    remove_state(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_key_files_are_private_and_hold_the_named_account(tmp_path: Path) -> None:
    address = new_evm_key(tmp_path / "keys" / "a.key")
    keypair = new_solana_keypair(tmp_path / "keys" / "b.json")
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    for name in ("a.key", "b.json"):
        assert stat.S_IMODE((tmp_path / "keys" / name).stat().st_mode) == 0o600
    text = (tmp_path / "keys" / "a.key").read_text()
    assert text.startswith("0x")
    assert len(text.strip()) == 66
    assert address.startswith("0x")
    assert bytes(json.loads((tmp_path / "keys" / "b.json").read_text())) == bytes(keypair)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("not json", "does not describe a devnet"),
        ('{"version": 99}', "format version 99"),
        ('{"version": 1}', "does not describe a devnet"),
    ],
)
def test_a_broken_state_file_is_named(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "devnet.json").write_text(text)
    with pytest.raises(DevnetStateError, match=expected):
        read_state(tmp_path)


def test_a_missing_state_file_asks_whether_the_devnet_is_up(tmp_path: Path) -> None:
    with pytest.raises(DevnetStateError, match="is the devnet up"):
        read_state(tmp_path)


@pytest.mark.parametrize(
    ("guardians", "ports", "expected"),
    [
        (0, DevnetPorts(), "guardians must be 1..19"),
        (20, DevnetPorts(), "guardians must be 1..19"),
        (3, DevnetPorts(coordinator=70000), "port of coordinator must be 0..65535"),
        (3, DevnetPorts(coordinator=9000, worker_evm=9000), "ports must differ"),
    ],
)
def test_bad_settings_are_refused(guardians: int, ports: DevnetPorts, expected: str) -> None:
    with pytest.raises(DevnetError, match=expected):
        DevnetSettings(guardians=guardians, ports=ports)


def test_process_alive_knows_this_process_and_not_a_free_pid() -> None:
    assert process_alive(os.getpid())
    assert not process_alive(2**22 + 1)  # above the kernel's pid_max

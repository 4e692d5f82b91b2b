"""What a running devnet tells other processes: `devnet.json`, the chains file, key files.

A devnet's state directory holds everything a relayer, coordinator or worker process needs to
talk to it:

- ``devnet.json``: RPC URLs, chain ids, contract and program addresses, the guardian set, the
  paths of the key files and the process ids (:class:`DevnetInfo`);
- ``chains.yaml``: the chains in the ``FEDRELAY_CHAINS_FILE`` format (docs/operations.md, 1);
- ``devnet.env``: the environment variables of the process contract, for ``source``-ing;
- ``keys/``: one file per key, mode 0600, in the formats the processes read (EVM: ``0x`` + 64
  hex digits; Solana: the JSON array of 64 numbers ``solana-keygen`` writes).

These are devnet keys only. Nothing here logs or prints a key.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from eth_account import Account
from solders.keypair import Keypair

from fedrelay.protocol.wormhole.guardians import SECP256K1_N

DEVNET_FILE = "devnet.json"
CHAINS_FILE = "chains.yaml"
ENV_FILE = "devnet.env"
KEYS_DIR = "keys"
STATE_VERSION = 1

COORDINATOR = "coordinator"
WORKER_EVM = "worker-evm"
WORKER_SOLANA = "worker-solana"


class DevnetError(RuntimeError):
    """The devnet cannot be started, reached or described as asked."""


class DevnetStateError(DevnetError):
    """A state file is missing or does not describe a devnet."""


@dataclass(frozen=True)
class ChainInfo:
    """One chain of the devnet.

    Attributes:
        name: The chain's name in the chains file (``coordinator``, ``worker-evm``, ...).
        kind: ``evm`` or ``solana``.
        wormhole_chain_id: Its Wormhole chain id.
        rpc_url: Its JSON-RPC endpoint.
        address: The fedrelay contract (JobMarket or WorkerHub) or the worker program id.
        finality: What the chain's watcher waits for.
        pid: The process serving the RPC (the anvil, or the supervisor for Solana).
        evm_chain_id: The EVM chain id (EVM chains only).
        message_core: The MessageCore contract (EVM chains only).
    """

    name: str
    kind: str
    wormhole_chain_id: int
    rpc_url: str
    address: str
    finality: str
    pid: int
    evm_chain_id: int | None = None
    message_core: str | None = None


@dataclass(frozen=True)
class WorkerKey:
    """A funded worker account: its key file on its chain and its payout account.

    Attributes:
        chain: The worker chain's name.
        key_file: The worker's key (EVM hex or Solana keypair JSON).
        address: The worker's address (EVM hex or base58 public key).
        payout_key_file: An EVM key on the coordinator chain that receives the rewards.
        payout_address: That key's address.
    """

    chain: str
    key_file: str
    address: str
    payout_key_file: str
    payout_address: str


@dataclass(frozen=True)
class DevnetInfo:
    """The content of ``devnet.json``: everything a process needs to use the devnet.

    Attributes:
        state_dir: The devnet's state directory.
        supervisor_pid: The process that holds the chains (this process when in-process).
        chains: The three chains, coordinator first.
        guardian_set_index: The index of the guardian set every receiver trusts.
        guardian_addresses: The guardians' addresses (``0x`` + 40 hex digits).
        guardian_key_files: One key file per guardian, in guardian-index order.
        threshold_share_files: One threshold share file per guardian, in the same order: the
            devnet threshold key (:func:`~fedrelay.adapters.devnet.guardians.threshold_key`),
            appended as key 0 on every receiver.
        threshold_group_key: That key's group key (hex, 33 bytes).
        threshold_verification_shares: Its verification shares (hex), in guardian order.
        accounts: Role name to address (owner, aggregator, challenger, relayers, Solana admin).
        key_files: Role name to key file path, for the same roles.
        workers: Funded worker accounts (see :meth:`Devnet.fund_workers`).
        chains_file: The chains YAML in the ``FEDRELAY_CHAINS_FILE`` format.
        env_file: The process-contract environment variables.
        version: Format version of this file.
    """

    state_dir: str
    supervisor_pid: int
    chains: tuple[ChainInfo, ...]
    guardian_set_index: int
    guardian_addresses: tuple[str, ...]
    guardian_key_files: tuple[str, ...]
    accounts: dict[str, str]
    key_files: dict[str, str]
    workers: tuple[WorkerKey, ...] = ()
    threshold_share_files: tuple[str, ...] = ()
    threshold_group_key: str = ""
    threshold_verification_shares: tuple[str, ...] = ()
    chains_file: str = ""
    env_file: str = ""
    version: int = STATE_VERSION

    def chain(self, name: str) -> ChainInfo:
        """The chain called `name`.

        Raises:
            DevnetStateError: No chain has that name.
        """
        for chain in self.chains:
            if chain.name == name:
                return chain
        known = ", ".join(c.name for c in self.chains)
        raise DevnetStateError(f"the devnet has no chain named {name!r} (known: {known})")

    @property
    def pids(self) -> tuple[int, ...]:
        """Every process id serving the devnet, the supervisor first."""
        ordered = [self.supervisor_pid, *(c.pid for c in self.chains)]
        return tuple(dict.fromkeys(ordered))

    def to_json(self) -> str:
        """This state as the JSON text of ``devnet.json``."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = DEVNET_FILE) -> DevnetInfo:
        """Read a state from ``devnet.json`` text.

        Raises:
            DevnetStateError: The text is not a devnet state of this version.
        """
        try:
            data = json.loads(text)
            if data.get("version") != STATE_VERSION:
                raise DevnetStateError(
                    f"{where} has format version {data.get('version')!r}, expected "
                    f"{STATE_VERSION}; run `fedrelay devnet down` and `up` again"
                )
            return cls(
                state_dir=data["state_dir"],
                supervisor_pid=int(data["supervisor_pid"]),
                chains=tuple(ChainInfo(**c) for c in data["chains"]),
                guardian_set_index=int(data["guardian_set_index"]),
                guardian_addresses=tuple(data["guardian_addresses"]),
                guardian_key_files=tuple(data["guardian_key_files"]),
                accounts=dict(data["accounts"]),
                key_files=dict(data["key_files"]),
                workers=tuple(WorkerKey(**w) for w in data.get("workers", ())),
                threshold_share_files=tuple(data.get("threshold_share_files", ())),
                threshold_group_key=data.get("threshold_group_key", ""),
                threshold_verification_shares=tuple(data.get("threshold_verification_shares", ())),
                chains_file=data.get("chains_file", ""),
                env_file=data.get("env_file", ""),
            )
        except DevnetStateError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise DevnetStateError(f"{where} does not describe a devnet: {exc!r}") from None

    def chains_yaml(self) -> str:
        """The chains in the ``FEDRELAY_CHAINS_FILE`` format (docs/operations.md, section 1)."""
        lines = ["chains:"]
        for chain in self.chains:
            lines += [
                f'  - name: "{chain.name}"',
                f"    wormhole_chain_id: {chain.wormhole_chain_id}",
                f'    kind: "{chain.kind}"',
                f'    rpc_url: "{chain.rpc_url}"',
                f'    address: "{chain.address}"',
                f'    finality: "{chain.finality}"',
            ]
        return "\n".join(lines) + "\n"

    def environment(self) -> dict[str, str]:
        """The process-contract variables that point a relayer or coordinator at this devnet."""
        return {
            "FEDRELAY_CHAINS_FILE": self.chains_file,
            "FEDRELAY_GUARDIAN_SET_INDEX": str(self.guardian_set_index),
            "FEDRELAY_GUARDIAN_ADDRESSES": json.dumps(list(self.guardian_addresses)),
            "FEDRELAY_THRESHOLD_GROUP_KEY": self.threshold_group_key,
            "FEDRELAY_THRESHOLD_VERIFICATION_SHARES": json.dumps(
                list(self.threshold_verification_shares)
            ),
            "FEDRELAY_COORDINATOR_CHAIN": COORDINATOR,
        }


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def read_state(state_dir: Path) -> DevnetInfo:
    """Read ``devnet.json`` from `state_dir`.

    Raises:
        DevnetStateError: The file is missing or not a devnet state.
    """
    path = state_dir / DEVNET_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DevnetStateError(f"no devnet state at {path}: is the devnet up?") from None
    except OSError as exc:
        raise DevnetStateError(f"cannot read {path}: {exc.strerror}") from None
    return DevnetInfo.from_json(text, str(path))


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Write `text` to `path` through a temporary file and a rename (readers never see half)."""
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)


def write_state(info: DevnetInfo) -> None:
    """Write ``devnet.json``, the chains file and the env file into the state directory."""
    state_dir = Path(info.state_dir)
    write_atomically(Path(info.chains_file), info.chains_yaml())
    env = "".join(f"export {k}='{v}'\n" for k, v in info.environment().items())
    write_atomically(Path(info.env_file), env)
    write_atomically(state_dir / DEVNET_FILE, info.to_json())


def remove_state(state_dir: Path) -> None:
    """Remove ``devnet.json``, the chains and env files and the keys from `state_dir`."""
    for name in (DEVNET_FILE, CHAINS_FILE, ENV_FILE):
        (state_dir / name).unlink(missing_ok=True)
    shutil.rmtree(state_dir / KEYS_DIR, ignore_errors=True)


def write_key_file(path: Path, content: str) -> Path:
    """Write a key file readable by its owner only (mode 0600) and return its path."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(path, content if content.endswith("\n") else content + "\n", 0o600)
    return path


def new_evm_key(path: Path) -> str:
    """Create a fresh EVM key in a 0600 file at `path`; return its checksummed address."""
    while True:
        raw = secrets.token_bytes(32)
        if 0 < int.from_bytes(raw, "big") < SECP256K1_N:
            break
    write_key_file(path, "0x" + raw.hex())
    return str(Account.from_key(raw).address)


def new_solana_keypair(path: Path) -> Keypair:
    """Create a fresh Solana keypair in a 0600 file at `path` (solana-keygen's JSON form)."""
    keypair = Keypair()
    write_key_file(path, json.dumps(list(bytes(keypair))))
    return keypair

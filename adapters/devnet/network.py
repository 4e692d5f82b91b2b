"""The whole devnet: three chains with fedrelay deployed and linked, guardians and funded keys.

    with Devnet(Path(".fedrelay/devnet")) as devnet:
        info = devnet.info          # what devnet.json says
        devnet.fund_workers(2, 2)   # worker key files, funded on their chains

| chain | devnet | Wormhole chain | deployed |
| --- | --- | --- | --- |
| ``coordinator`` | anvil, EVM chain id 31337 | 2 | MessageCore, JobMarket |
| ``worker-evm`` | anvil, EVM chain id 31338 | 4 | MessageCore, WorkerHub |
| ``worker-solana`` | LiteSVM JSON-RPC facade, in this process | 1 | the worker program |

JobMarket trusts WorkerHub (chain 4) and the worker program (chain 1) as peers; both trust
JobMarket (chain 2). Every receiver trusts guardian set 0 of the devnet guardians. Contracts
come from ``contracts/out`` (``forge build`` is a no-op when they are current) and the program
from ``programs/build.py`` (cached by a stamp of its inputs).

Every account is a fresh key in a 0600 file under ``keys/``, funded on its chains: the owner of
the contracts and of the program, the aggregator and challenger of JobMarket, one relayer signer
per destination chain, and the workers of :meth:`Devnet.fund_workers`. The guardians are the
public test guardians of :mod:`fedrelay.adapters.devnet.guardians` (guardian 0 is Wormhole's own
devnet
guardian). None of these keys is for anything but a devnet.

The anvils are children that die with this process (``PR_SET_PDEATHSIG``); the Solana RPC runs
on a thread of this process. Start and stop the devnet from the main thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from fedrelay.adapters.devnet.forge import Forge
from fedrelay.adapters.devnet.guardians import (
    append_key_vaa,
    guardian_key,
    guardian_signers,
    threshold_key,
)
from fedrelay.adapters.devnet.process import port_open
from fedrelay.adapters.devnet.services import Anvil
from fedrelay.adapters.devnet.solana_rpc import SolanaDevnet, serve_devnet
from fedrelay.adapters.devnet.state import (
    CHAINS_FILE,
    COORDINATOR,
    ENV_FILE,
    KEYS_DIR,
    WORKER_EVM,
    WORKER_SOLANA,
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
    write_key_file,
    write_state,
)
from fedrelay.adapters.evm.artifacts import CONTRACTS_DIR
from fedrelay.adapters.evm.chain import EvmChain, Signer
from fedrelay.adapters.evm.core import MessageCoreContract, address_to_bytes32
from fedrelay.adapters.evm.deploy import (
    Link,
    deploy_job_market,
    deploy_message_core,
    deploy_worker_hub,
    link,
)
from fedrelay.adapters.evm.hub import WorkerHubContract
from fedrelay.adapters.evm.market import JobMarketContract
from fedrelay.adapters.solana import instructions as ix
from fedrelay.adapters.solana.client import WorkerProgramClient
from fedrelay.adapters.solana.program import build_program
from fedrelay.protocol.wormhole.guardians import GuardianSigner

COORDINATOR_EVM_CHAIN = 31337
WORKER_EVM_CHAIN = 31338
COORDINATOR_WORMHOLE_CHAIN = 2
WORKER_EVM_WORMHOLE_CHAIN = 4
SOLANA_WORMHOLE_CHAIN = 1

#: Largest TASK_ASSIGNED / ROUND_SETTLED batch per message (Solana's transactions hold fewer).
EVM_MAX_BATCH = 16
SOLANA_MAX_BATCH = 8
MAX_GUARDIANS = 19

ETHER = 10**18
LAMPORTS_PER_SOL = 1_000_000_000
_EVM_FUNDS = 10_000 * ETHER
_SOLANA_FUNDS = 1_000 * LAMPORTS_PER_SOL

_T = TypeVar("_T")


@dataclass(frozen=True)
class DevnetPorts:
    """Loopback ports of the three RPC endpoints; 0 picks a free port."""

    coordinator: int = 8545
    worker_evm: int = 8546
    solana: int = 8899

    def named(self) -> dict[str, int]:
        """Chain name to port."""
        return {
            COORDINATOR: self.coordinator,
            WORKER_EVM: self.worker_evm,
            WORKER_SOLANA: self.solana,
        }


@dataclass(frozen=True)
class DevnetSettings:
    """How the devnet is set up.

    Attributes:
        guardians: Number of devnet guardians (quorum floor(2n/3)+1), 1..19.
        ports: The RPC ports.
        challenge_window: JobMarket's challenge window in seconds.
        evm_min_stake: WorkerHub's minimum stake in wei.
        solana_min_stake: The worker program's minimum stake in lamports.
        unbonding_delay: Seconds a worker's stake stays bonded after it asks to unbond.
        coordinator_block_time: Seconds between the coordinator chain's blocks when no
            transaction comes (transactions are mined at once). JobMarket reads the end of a
            challenge window from the latest block's time, so an idle chain whose clock stood
            still would refuse ``settleRound`` for ever; a real chain makes blocks regularly.
    """

    guardians: int = 3
    ports: DevnetPorts = DevnetPorts()
    challenge_window: int = 60
    evm_min_stake: int = ETHER
    solana_min_stake: int = LAMPORTS_PER_SOL
    unbonding_delay: int = 3600
    coordinator_block_time: float = 1.0

    def __post_init__(self) -> None:
        if self.coordinator_block_time <= 0:
            raise DevnetError(
                f"coordinator_block_time must be positive, got {self.coordinator_block_time}"
            )
        if not 1 <= self.guardians <= MAX_GUARDIANS:
            raise DevnetError(f"guardians must be 1..{MAX_GUARDIANS}, got {self.guardians}")
        for name, port in self.ports.named().items():
            if not 0 <= port <= 0xFFFF:
                raise DevnetError(f"port of {name} must be 0..65535, got {port}")
        busy = [p for p in self.ports.named().values() if p]
        if len(set(busy)) != len(busy):
            raise DevnetError(f"the three RPC ports must differ, got {self.ports}")


def ports_in_use(ports: DevnetPorts) -> list[str]:
    """Which of the given fixed ports something already listens on (as 'chain (port N)')."""
    return [
        f"{name} (port {port})" for name, port in ports.named().items() if port and port_open(port)
    ]


def _run(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine to completion on a loop of its own, whether or not one runs here."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="devnet-async") as pool:
        return pool.submit(asyncio.run, coroutine).result()


class Devnet:
    """The devnet's chains and deployments, in this process; a context manager."""

    def __init__(
        self,
        state_dir: Path,
        settings: DevnetSettings | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        """Describe a devnet; nothing starts before :meth:`start` (or ``with``).

        Args:
            state_dir: Where state, logs and key files go (created with mode 0700).
            settings: Guardians, ports and contract parameters.
            progress: Called with a short description of each step as it begins.
        """
        self.state_dir = Path(state_dir).resolve()
        self.settings = settings or DevnetSettings()
        self._progress = progress or (lambda _step: None)
        self._stack = ExitStack()
        self._info: DevnetInfo | None = None
        self._owns_state = False
        self.coordinator: Anvil | None = None
        self.worker_evm: Anvil | None = None
        self.solana: SolanaDevnet | None = None
        self.guardians: tuple[GuardianSigner, ...] = ()

    # ---- life cycle ---------------------------------------------------------------------------
    @property
    def info(self) -> DevnetInfo:
        """What ``devnet.json`` says.

        Raises:
            DevnetError: The devnet was not started.
        """
        if self._info is None:
            raise DevnetError("the devnet is not started")
        return self._info

    def start(self, supervisor_pid: int | None = None) -> DevnetInfo:
        """Build, start the chains, deploy, link, fund and write the state files.

        Args:
            supervisor_pid: The process to record as the devnet's holder (default: this one).

        Raises:
            DevnetError: A port is taken or a step failed; everything started is stopped.
        """
        busy = ports_in_use(self.settings.ports)
        if busy:
            raise DevnetError(f"port in use: {', '.join(busy)}; stop what holds it or pick others")
        try:
            self._start(supervisor_pid or os.getpid())
        except BaseException:
            self.close()
            raise
        return self.info

    def close(self) -> None:
        """Stop the chains and remove the state files and keys (idempotent); logs stay."""
        try:
            self._stack.close()
        finally:
            self._stack = ExitStack()
            self.coordinator = self.worker_evm = self.solana = None
            if self._owns_state:
                remove_state(self.state_dir)
                self._owns_state = False
            self._info = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- handles for tests and tools ------------------------------------------------------------
    def evm_chain(self, name: str) -> EvmChain:
        """A web3 connection to an EVM chain of the devnet (``coordinator`` or ``worker-evm``)."""
        return EvmChain(self.info.chain(name).rpc_url)

    def job_market(self) -> JobMarketContract:
        """The JobMarket on the coordinator chain."""
        return JobMarketContract(self.evm_chain(COORDINATOR), self.info.chain(COORDINATOR).address)

    def worker_hub(self) -> WorkerHubContract:
        """The WorkerHub on the EVM worker chain."""
        return WorkerHubContract(self.evm_chain(WORKER_EVM), self.info.chain(WORKER_EVM).address)

    @property
    def program_id(self) -> Pubkey:
        """The worker program's id on the Solana devnet."""
        return Pubkey.from_string(self.info.chain(WORKER_SOLANA).address)

    def key_file(self, role: str) -> Path:
        """The key file of an account role (see ``DevnetInfo.key_files``)."""
        try:
            return Path(self.info.key_files[role])
        except KeyError:
            known = ", ".join(sorted(self.info.key_files))
            raise DevnetError(f"no key for role {role!r} (known: {known})") from None

    # ---- funding ------------------------------------------------------------------------------
    def fund_workers(self, n_evm: int, n_solana: int) -> tuple[WorkerKey, ...]:
        """Create and fund worker accounts; record them in ``devnet.json``.

        Each EVM worker gets a key funded on the worker chain (and on the coordinator chain, to
        withdraw rewards); each Solana worker a keypair funded with SOL. Every worker also gets
        a payout key funded on the coordinator chain.

        Args:
            n_evm: Workers on the EVM worker chain.
            n_solana: Workers on Solana.

        Returns:
            The new workers (those recorded before are kept in ``devnet.json``).

        Raises:
            DevnetError: A count is negative or the devnet is not started.
        """
        if n_evm < 0 or n_solana < 0:
            raise DevnetError(f"worker counts must not be negative, got {n_evm} and {n_solana}")
        info = self.info
        keys = self.state_dir / KEYS_DIR
        first = len(info.workers)
        created: list[WorkerKey] = []
        for number in range(first, first + n_evm + n_solana):
            on_solana = number - first >= n_evm
            payout_file = keys / f"worker-{number}-payout.key"
            payout = new_evm_key(payout_file)
            self._fund_evm(COORDINATOR, payout)
            if on_solana:
                key_file = keys / f"worker-{number}-solana.json"
                address = str(new_solana_keypair(key_file).pubkey())
                self._fund_solana(Pubkey.from_string(address))
            else:
                key_file = keys / f"worker-{number}-evm.key"
                address = new_evm_key(key_file)
                self._fund_evm(WORKER_EVM, address)
                self._fund_evm(COORDINATOR, address)
            chain = WORKER_SOLANA if on_solana else WORKER_EVM
            created.append(WorkerKey(chain, str(key_file), address, str(payout_file), payout))
        self._info = replace(info, workers=(*info.workers, *created))
        write_state(self._info)
        return tuple(created)

    def _fund_evm(self, chain: str, address: str) -> None:
        anvil = self.coordinator if chain == COORDINATOR else self.worker_evm
        if anvil is None:
            raise DevnetError("the devnet is not started")
        anvil.rpc("anvil_setBalance", [address, hex(_EVM_FUNDS)])

    def _fund_solana(self, address: Pubkey) -> None:
        if self.solana is None:
            raise DevnetError("the devnet is not started")
        self.solana.chain.airdrop(address, _SOLANA_FUNDS)

    # ---- start-up -------------------------------------------------------------------------------
    def _start(self, supervisor_pid: int) -> None:
        settings = self.settings
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(DevnetStateError):
            holder = read_state(self.state_dir).supervisor_pid
            if holder != supervisor_pid and process_alive(holder):
                raise DevnetError(f"a running devnet (pid {holder}) uses {self.state_dir}")
        self._owns_state = True
        keys = self.state_dir / KEYS_DIR
        remove_state(self.state_dir)  # what an earlier devnet left describes nothing now

        self._progress("building contracts")
        Forge(CONTRACTS_DIR).build()
        self._progress("building the Solana worker program")
        elf = build_program().read_bytes()

        self._progress("starting the chains")
        ports = settings.ports
        self.coordinator = self._stack.enter_context(
            Anvil(COORDINATOR_EVM_CHAIN, port=ports.coordinator or None,
                  block_time=settings.coordinator_block_time, mixed_mining=True,
                  workdir=self.state_dir / "anvil-coordinator")
        )  # fmt: skip
        self.worker_evm = self._stack.enter_context(
            Anvil(WORKER_EVM_CHAIN, port=ports.worker_evm or None,
                  workdir=self.state_dir / "anvil-worker-evm")
        )  # fmt: skip
        self.solana = self._stack.enter_context(serve_devnet(port=ports.solana))

        self._progress("creating keys and funding accounts")
        self.guardians = tuple(guardian_signers(settings.guardians))
        guardian_files = tuple(
            str(write_key_file(keys / f"guardian-{i}.key", "0x" + guardian_key(i).hex()))
            for i in range(settings.guardians)
        )
        dealt = threshold_key(settings.guardians)
        share_files = tuple(
            str(write_key_file(keys / f"guardian-{s.guardian_index}.share",
                               "0x" + s.secret_bytes().hex()))
            for s in dealt.shares
        )  # fmt: skip
        accounts: dict[str, str] = {}
        key_files: dict[str, str] = {}
        for role, funded_on in (
            ("owner", (COORDINATOR, WORKER_EVM)),
            ("aggregator", (COORDINATOR,)),
            ("challenger", (COORDINATOR,)),
            ("relayer-coordinator", (COORDINATOR,)),
            ("relayer-worker-evm", (WORKER_EVM,)),
        ):
            path = keys / f"{role}.key"
            accounts[role] = new_evm_key(path)
            key_files[role] = str(path)
            for chain in funded_on:
                self._fund_evm(chain, accounts[role])
        for role in ("solana-admin", "relayer-worker-solana"):
            path = keys / f"{role}.json"
            keypair = new_solana_keypair(path)
            accounts[role], key_files[role] = str(keypair.pubkey()), str(path)
            self._fund_solana(keypair.pubkey())

        self._progress("deploying contracts")
        owner = Signer(Path(key_files["owner"]).read_text().strip())
        c_chain, w_chain = EvmChain(self.coordinator.rpc_url), EvmChain(self.worker_evm.rpc_url)
        addresses = ["0x" + g.address.hex() for g in self.guardians]
        c_core = deploy_message_core(c_chain, owner, COORDINATOR_WORMHOLE_CHAIN, addresses)
        w_core = deploy_message_core(w_chain, owner, WORKER_EVM_WORMHOLE_CHAIN, addresses)
        market = deploy_job_market(
            c_chain, owner, c_core.address, aggregator=accounts["aggregator"],
            challenger=accounts["challenger"], challenge_window=settings.challenge_window,
        )  # fmt: skip
        hub = deploy_worker_hub(
            w_chain, owner, w_core.address, coordinator_chain=COORDINATOR_WORMHOLE_CHAIN,
            min_stake=settings.evm_min_stake, unbonding_delay=settings.unbonding_delay,
        )  # fmt: skip

        self._progress("deploying the Solana worker program")
        program_id = Keypair().pubkey()
        self.solana.add_program(program_id, elf)
        admin = Keypair.from_json(Path(key_files["solana-admin"]).read_text())
        _run(self._initialize_program(program_id, admin, market.address))

        self._progress("appending the devnet threshold key (version-2 VAAs)")
        governance = append_key_vaa(settings.guardians).to_bytes()
        c_core.append_threshold_key(owner, governance)
        w_core.append_threshold_key(owner, governance)
        _run(self._append_program_key(program_id, admin, governance))

        self._progress("linking peers")
        evm_link = Link(COORDINATOR_WORMHOLE_CHAIN, WORKER_EVM_WORMHOLE_CHAIN, EVM_MAX_BATCH)
        link(market, owner, hub, owner, evm_link)
        market.set_peer(owner, SOLANA_WORMHOLE_CHAIN, bytes(program_id))
        market.set_max_batch(owner, SOLANA_WORMHOLE_CHAIN, SOLANA_MAX_BATCH)

        self._progress("writing the state files")
        chains = (
            _evm_info(COORDINATOR, COORDINATOR_WORMHOLE_CHAIN, self.coordinator, market.address,
                      c_core),
            _evm_info(WORKER_EVM, WORKER_EVM_WORMHOLE_CHAIN, self.worker_evm, hub.address, w_core),
            ChainInfo(name=WORKER_SOLANA, kind="solana", wormhole_chain_id=SOLANA_WORMHOLE_CHAIN,
                      rpc_url=self.solana.url, address=str(program_id), finality="confirmed",
                      pid=supervisor_pid),
        )  # fmt: skip
        self._info = DevnetInfo(
            state_dir=str(self.state_dir),
            supervisor_pid=supervisor_pid,
            chains=chains,
            guardian_set_index=0,
            guardian_addresses=tuple(addresses),
            guardian_key_files=guardian_files,
            threshold_share_files=share_files,
            threshold_group_key=dealt.group_key.hex(),
            threshold_verification_shares=tuple(
                dealt.verification_shares[s.identifier].hex() for s in dealt.shares
            ),
            accounts=accounts,
            key_files=key_files,
            chains_file=str(self.state_dir / CHAINS_FILE),
            env_file=str(self.state_dir / ENV_FILE),
        )
        write_state(self._info)

    async def _initialize_program(self, program_id: Pubkey, admin: Keypair, market: str) -> None:
        assert self.solana is not None
        async with AsyncClient(self.solana.url) as rpc:
            client = WorkerProgramClient(rpc, program_id)
            await client.initialize(
                admin,
                ix.InitializeArgs(
                    peer_chain=COORDINATOR_WORMHOLE_CHAIN,
                    peer_emitter=address_to_bytes32(market),
                    guardian_set_index=0,
                    guardian_addresses=tuple(g.address for g in self.guardians),
                    unbonding_delay=self.settings.unbonding_delay,
                    min_stake=self.settings.solana_min_stake,
                    consistency_level=1,
                ),
            )

    async def _append_program_key(
        self, program_id: Pubkey, admin: Keypair, governance: bytes
    ) -> None:
        assert self.solana is not None
        async with AsyncClient(self.solana.url) as rpc:
            await WorkerProgramClient(rpc, program_id).append_threshold_key(admin, governance)


def _evm_info(
    name: str, wormhole_chain: int, anvil: Anvil, address: str, core: MessageCoreContract
) -> ChainInfo:
    return ChainInfo(
        name=name,
        kind="evm",
        wormhole_chain_id=wormhole_chain,
        rpc_url=anvil.rpc_url,
        address=address,
        finality="latest",
        pid=anvil.pid or 0,
        evm_chain_id=anvil.chain_id,
        message_core=core.address,
    )


def iter_key_files(info: DevnetInfo) -> Iterator[Path]:
    """Every key file the devnet wrote (guardians and their threshold shares, roles, workers and
    their payout keys)."""
    yield from (Path(p) for p in info.guardian_key_files)
    yield from (Path(p) for p in info.threshold_share_files)
    yield from (Path(p) for p in info.key_files.values())
    for worker in info.workers:
        yield Path(worker.key_file)
        yield Path(worker.payout_key_file)

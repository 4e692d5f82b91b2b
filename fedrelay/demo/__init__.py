"""The end-to-end demo: one training job across three chains, run to completion in one process.

:func:`run_demo` starts the devnet (two anvils and the Solana RPC, everything deployed and
linked), the relayer's stages on the in-process bus with a SQLite ledger (a watcher per chain,
the devnet guardians attesting, assembly, routing, a deliverer per chain), the coordinator
service with its HTTP API on loopback, and the workers: some on the EVM worker chain, some on
Solana, one or more of them dishonest (:mod:`~fedrelay.demo.actors`). It posts a job on the
digits data with a non-IID (Dirichlet) split (or on digits each worker owns, or with secure
aggregation), waits until the coordinator reports the
job COMPLETED and every settlement has reached the worker chains, then reads the outcome back
from the chains: each payout address's claimable reward in JobMarket, and each worker's stake
in WorkerHub or in its Solana worker account.

The outcome is a :class:`DemoResult`; :meth:`DemoResult.problems` lists every acceptance
condition that failed (accuracy, honest workers paid, every dishonest one caught and slashed).

The package reads in the order the demo runs:

- :mod:`~fedrelay.demo.settings`: what runs (:class:`DemoSettings`, :class:`DemoBackends`);
- :mod:`~fedrelay.demo.workloads`: the jobs on data the workers own (``cnn``, ``lm``, ``lora``)
  that the demo runs in place of the digits job on request;
- :mod:`~fedrelay.demo.private`: the digits on data each worker owns, checked by spot reveals;
- :mod:`~fedrelay.demo.assembly`: the devnet, ledgers, relayer, coordinator and workers started;
- :mod:`~fedrelay.demo.coordinator`: the coordinator as a restartable unit;
- :mod:`~fedrelay.demo.actors`: the dishonest workers;
- :mod:`~fedrelay.demo.scenario`: the job posted and followed (:func:`run_demo`);
- :mod:`~fedrelay.demo.outcome`: the outcome read back from the ledgers and chains;
- :mod:`~fedrelay.demo.report`: the verdict and the report files (:func:`write_summary`), with
  :mod:`~fedrelay.demo.costs` (gas and compute units) and :mod:`~fedrelay.demo.plot`.
"""

from __future__ import annotations

from fedrelay.demo.progress import DemoProgress, QuietProgress
from fedrelay.demo.report import (
    CoordinatorRestart,
    DemoResult,
    Detection,
    WorkerOutcome,
    write_summary,
)
from fedrelay.demo.scenario import run_demo
from fedrelay.demo.settings import (
    ETHER,
    LAMPORTS_PER_SOL,
    REJECTED_SLASH,
    STAKE_UNITS,
    ChainKind,
    Cheat,
    DemoBackends,
    DemoError,
    DemoSettings,
    Dishonesty,
)

__all__ = [
    "ETHER",
    "LAMPORTS_PER_SOL",
    "REJECTED_SLASH",
    "STAKE_UNITS",
    "ChainKind",
    "Cheat",
    "CoordinatorRestart",
    "DemoBackends",
    "DemoError",
    "DemoProgress",
    "DemoResult",
    "DemoSettings",
    "Detection",
    "Dishonesty",
    "QuietProgress",
    "WorkerOutcome",
    "run_demo",
    "write_summary",
]

"""A proposed round audited from anyone's seat: checked against the market's rules, and voided
when it breaks one (``ProposalChecker.disprove``).

JobMarket takes a round's proposal optimistically (docs/contracts.md, "JobMarket"): the rules
bind it only if somebody checks inside the challenge window. A worker, the job's poster or any
auditor runs this with ``fedrelay worker check-proposal``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from requests.exceptions import RequestException

from fedrelay.adapters.evm.chain import EvmChain, Signer
from fedrelay.adapters.evm.errors import ContractRevert, EvmError
from fedrelay.adapters.evm.market import JobMarketContract
from fedrelay.ports.worker_chain import ChainRejected, ChainUnavailable


@dataclass(frozen=True)
class ProposalAudit:
    """What a check of a pending proposal found.

    Attributes:
        proposal: The proposal's number in its round (1 for the first).
        broken: The rule it breaks, as the checker names it (``AcceptedWithoutCommitment(0x..)``),
            or None when it keeps every rule.
        voided: Whether this audit's disproof voided it.
    """

    job_id: int
    round: int
    proposal: int
    broken: str | None
    voided: bool


async def audit_proposal(
    rpc_url: str,
    market_address: str,
    job_id: int,
    round_number: int,
    disprover_key: str | None = None,
) -> ProposalAudit:
    """Check the round's pending proposal; with ``disprover_key``, void it when it breaks a rule.

    Raises:
        ChainUnavailable: The coordinator chain does not answer.
        ChainRejected: The round has no pending proposal, the chain's logs do not rebuild its
            lanes, or the market refused the disproof (its window closed); the message says why.
    """

    def run() -> ProposalAudit:
        market = JobMarketContract(EvmChain(rpc_url), market_address)
        proposal = market.round(job_id, round_number).proposal
        broken = market.audit_proposal(job_id, round_number)
        voided = False
        if broken is not None and disprover_key is not None:
            market.disprove_proposal(Signer(disprover_key), job_id, round_number)
            voided = True
        shown = None if broken is None else str(broken).removeprefix("contract reverted with ")
        return ProposalAudit(job_id, round_number, proposal, shown, voided)

    try:
        return await asyncio.to_thread(run)
    except (RequestException, OSError) as exc:
        raise ChainUnavailable(f"the coordinator chain does not answer: {exc}") from exc
    except ContractRevert as exc:
        raise ChainRejected(f"the market refused the disproof: {exc}") from exc
    except EvmError as exc:
        raise ChainRejected(str(exc)) from exc

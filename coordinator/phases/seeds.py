"""The blocks a round's seeds come from, and the 32 bytes each takes from its block.

The job's ``randomness`` (:mod:`fedrelay.protocol.randomness`) decides both:

- **selection**: the block that opened the round, or, with ``randomness_lag_seconds`` L, the
  first block whose timestamp is at least L seconds after it (its beacon value was not yet known
  when the round opened);
- **challenges**: the first block whose timestamp is past the moment the round's commitments
  closed plus L (:func:`fedrelay.protocol.challenges.commitments_closed_at`), so that no value
  it takes was known to a worker while it could still commit.

Under ``prevrandao`` the value is the block's beacon, refused (:class:`JobUnusable`) when the
chain reports zero or a constant; under ``block_hash`` the block's hash.
"""

from __future__ import annotations

from fedrelay.coordinator.errors import JobUnusable
from fedrelay.ports.coordinator_chain import BlockRef, CoordinatorChain
from fedrelay.protocol.job_config import JobConfig
from fedrelay.protocol.randomness import CONSTANCY_DISTANCE, NoBeacon, randomness_value


def lag_of(config: JobConfig) -> int:
    """Seconds a seed's block must follow the moment its value must not be known before."""
    return config.randomness_lag_seconds if config.randomness == "prevrandao" else 0


async def selection_block(
    chain: CoordinatorChain, config: JobConfig, opening: BlockRef
) -> BlockRef | None:
    """The block a round's selection seed comes from; None while it does not exist yet."""
    lag = lag_of(config)
    if lag == 0:
        return opening
    return await chain.first_block_after(opening.timestamp + lag - 1, opening.number)


async def closing_block(
    chain: CoordinatorChain, config: JobConfig, closes_at: int, from_block: int
) -> BlockRef | None:
    """The block a round's challenge seed comes from; None while it does not exist yet."""
    return await chain.first_block_after(closes_at + lag_of(config), from_block)


async def seed_value(chain: CoordinatorChain, config: JobConfig, block: BlockRef) -> bytes:
    """The 32 bytes of ``block`` a seed takes under the job's randomness.

    Raises:
        JobUnusable: The job draws from the beacon and the chain has none.
    """
    earlier = None
    if config.randomness == "prevrandao" and block.number > 0:
        earlier = (await chain.block(max(0, block.number - CONSTANCY_DISTANCE))).beacon
    try:
        return randomness_value(
            config.randomness,
            block_number=block.number,
            block_hash=block.hash,
            beacon=block.beacon,
            earlier_beacon=earlier,
        )
    except NoBeacon as exc:
        raise JobUnusable(str(exc)) from None

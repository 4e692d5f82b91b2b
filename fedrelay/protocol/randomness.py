"""Where a round's randomness comes from: the coordinator chain's beacon, or its block hashes.

Two seeds of a round are derived from a coordinator-chain block: the selection seed from the
block that opened the round (:func:`fedrelay.coordinator.selection.round_seed`) and the challenge
seed from the first block after the round's commitments closed
(:func:`fedrelay.protocol.challenges.challenge_seed`). Each takes 32 bytes of that block, the
**randomness value**, chosen by the job's ``randomness`` (part of its configuration blob, so the
poster, the workers, the coordinator and anyone auditing a round agree on it):

``prevrandao`` (the default)
    The block's ``PREVRANDAO`` (the header field JSON-RPC calls ``mixHash``): the output of the
    chain's randomness beacon. On Ethereum it is the beacon chain's RANDAO mix, which the block's
    proposer cannot choose (its contribution is a deterministic signature); it can only withhold
    the block. On an OP-stack rollup it is the RANDAO of the block's L1 origin, which the
    sequencer does not compute either: it can only pick which recent L1 block an L2 block builds
    on, a choice among the few values its sequencing window holds, not a search over values it
    makes up. A sequencer that reorders, adds or drops transactions, or changes the timestamp,
    changes the block hash and leaves this value as it is.

A block's ``PREVRANDAO`` can be known before the block: on Ethereum it is the mix after its
parent, known from the parent on (a slot, 12 s, or longer after missed slots); on an OP-stack
rollup it is its L1 origin's, which can be as old as the sequencer drift. The job's
``randomness_lag_seconds`` therefore moves each seed to the first block at least that long after
the moment its value must not be known before (the round's opening; the close of its
commitments): 24 on Ethereum leaves a worker that wants to know its challenge before the
deadline only a run of missed slots to wait for, 1,800 on an OP-stack chain covers the drift,
and 0 is right only where a block's value is drawn as the block is made (the devnet's anvil).
Taking the value of the block *after* that first block instead (fixed when the first block was
made) would need no lag on Ethereum; it is not built.

``block_hash``
    The block's hash (every seed before this setting existed). A producer that is the only
    sequencer can grind it: every transaction order or timestamp it tries is a new hash, so it
    can search for a block whose draw spares a colluding worker. Only for chains with many
    independent producers and no beacon; a configuration blob that does not name
    ``randomness`` (posted before it existed) keeps this rule, so that its rounds are drawn as
    they were posted.

A chain without a beacon reports a constant (Arbitrum: 1) or zero ``PREVRANDAO``;
:func:`randomness_value` refuses such a block under ``prevrandao`` rather than seed a whole
job from a number everybody knows in advance. The rest of each derivation is unchanged: the
32 bytes stand where the block hash stood.
"""

from __future__ import annotations

from typing import Literal

RandomnessSource = Literal["prevrandao", "block_hash"]
"""A job's source of randomness (see the module docstring)."""

DEFAULT_RANDOMNESS: RandomnessSource = "prevrandao"
"""The source of a job whose configuration is built now."""

LEGACY_RANDOMNESS: RandomnessSource = "block_hash"
"""The source of a configuration blob that does not name one (posted before it existed)."""


CONSTANCY_DISTANCE = 1024
"""How many blocks back a beacon is compared with to tell it from a constant: more than the
longest run of blocks one L1 origin spans on an OP-stack rollup (its sequencer drift over its
block time: 1,800 s / 2 s = 900)."""


class NoBeacon(ValueError):
    """The coordinator chain has no randomness beacon (its ``PREVRANDAO`` is zero or constant)."""


def randomness_value(
    source: RandomnessSource,
    *,
    block_number: int,
    block_hash: bytes,
    beacon: bytes,
    earlier_beacon: bytes | None = None,
) -> bytes:
    """The 32 bytes of a block that seed a draw under ``source``.

    Args:
        source: The job's ``randomness``.
        block_number: The block's number (for the message).
        block_hash: The block's hash.
        beacon: The block's ``PREVRANDAO`` (``mixHash``).
        earlier_beacon: The value of the block :data:`CONSTANCY_DISTANCE` blocks earlier (or
            of block 0), where there is one: an equal value means the chain reports a constant,
            not a beacon. (Not the parent's: on a rollup consecutive blocks built on one L1
            origin share its value.)

    Raises:
        NoBeacon: ``source`` is ``prevrandao`` and the block's value is zero or the earlier
            block's.
        ValueError: A value is not 32 bytes, or the source is unknown.
    """
    for name, value in (("block hash", block_hash), ("PREVRANDAO", beacon)):
        if len(value) != 32:
            raise ValueError(f"a block's {name} is 32 bytes, got {len(value)}")
    if source == "block_hash":
        return block_hash
    if source != "prevrandao":
        raise ValueError(f"unknown randomness source {source!r}: prevrandao or block_hash")
    if beacon == bytes(32):
        raise NoBeacon(
            f"block {block_number} has a zero PREVRANDAO: the coordinator chain has no "
            "randomness beacon; post the job with randomness block_hash (grindable by a single "
            "sequencer) or on a chain with a beacon"
        )
    if earlier_beacon is not None and beacon == earlier_beacon:
        raise NoBeacon(
            f"block {block_number} has the PREVRANDAO block "
            f"{max(0, block_number - CONSTANCY_DISTANCE)} had (0x{beacon.hex()}): the "
            "coordinator chain reports a constant, not a beacon; post the job with randomness "
            "block_hash (grindable by a single sequencer) or on a chain with a beacon"
        )
    return beacon

"""Which examples each training step draws: the one definition, for the trainer and the verifier.

Step ``s`` of a task with ``n`` examples and batch size ``b`` is in epoch
``s // ceil(n / b)`` at position ``s % ceil(n / b)``; it draws the slice
``[position * b, (position + 1) * b)`` of the permutation of ``0..n-1`` that numpy's PCG64
generator, seeded with ``SeedSequence([seed, epoch])``, produces. The last batch of an epoch may
be shorter. ``seed`` and ``b`` come from the task's training configuration (committed by its
``config_hash``) and ``n`` is the committed example count, so anyone recomputes the indices a
step, or a transcript segment, consumed (:func:`segment_indices`) without seeing the data.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedrelay.protocol.training_config import TrainingConfig, TrainingError

__all__ = ["batch_indices", "segment_indices"]

Indices = npt.NDArray[np.int64]


def batch_indices(seed: int, step: int, size: int, batch_size: int) -> Indices:
    """The example indices of ``step``, in the order the step uses them.

    Raises:
        TrainingError: ``size`` or ``batch_size`` below 1, or a negative step.
    """
    if size < 1 or batch_size < 1 or step < 0:
        raise TrainingError(
            f"a batch needs size >= 1, batch_size >= 1 and step >= 0, got {size}, "
            f"{batch_size} and {step}"
        )
    per_epoch = -(-size // batch_size)
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng(np.random.SeedSequence([seed, epoch])).permutation(size)
    return order[position * batch_size : (position + 1) * batch_size].astype(np.int64)


def segment_indices(config: TrainingConfig, segment: int, size: int) -> Indices:
    """The distinct example indices transcript segment ``segment`` consumed, ascending.

    Args:
        config: The task's training configuration (seed, steps, batch size, checkpointing).
        segment: The segment, ``0..config.segments - 1``.
        size: The task's example count (the committed ``num_samples``).

    Raises:
        TrainingError: No such segment, or ``size`` below 1.
    """
    first, count = config.segment_steps(segment)
    batches = [
        batch_indices(config.seed, step, size, config.batch_size)
        for step in range(first, first + count)
    ]
    return np.unique(np.concatenate(batches)).astype(np.int64)

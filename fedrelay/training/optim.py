"""The local training recipe's update rules, written out so a replay can repeat them exactly.

``torch.optim`` keeps its state inside optimizer objects and may pick fused or multi-tensor
kernels whose rounding differs between versions and devices. A transcript checkpoint must hold the
whole state of the run and a replay from it must redo the very same arithmetic, so the rules are
spelled out here, one parameter at a time in sorted name order, and their state is plain tensors:
``state[param][slot]`` (stored in a checkpoint as ``optim/<param>/<slot>``) and the task-local step
counter (the checkpoint's ``step``).

One step, given the loss gradient ``g`` of every trainable parameter ``w``:

1. FedProx (``proximal_mu > 0``): ``g += mu * (w - w_round)``, the gradient of
   ``mu/2 * ||w - w_round||^2`` (:func:`add_proximal`);
2. clipping (``grad_clip_norm``): every ``g`` scaled by ``min(1, max_norm / (norm + 1e-6))`` with
   ``norm`` the global L2 norm over all of them (:func:`clip_global_norm`, as
   ``torch.nn.utils.clip_grad_norm_``);
3. the optimizer (:func:`apply_update`) at the schedule's learning rate of the step:

   - SGD: ``g += wd * w``; ``buf = momentum * buf + g``; ``w -= lr * buf`` (Nesterov:
     ``w -= lr * (g + momentum * buf)``); without momentum ``w -= lr * g`` and no state;
   - Adam: ``g += wd * w``; ``m = b1 m + (1 - b1) g``; ``v = b2 v + (1 - b2) g^2``;
     ``w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`` with ``t = step + 1``;
   - AdamW: ``w *= 1 - lr * wd`` first, then the Adam step without ``wd`` in the gradient.

These match ``torch.optim.SGD``, ``Adam`` and ``AdamW`` with their single-tensor loops.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from fedrelay.protocol.training_config import AdamSpec, SgdSpec

OptimizerState = dict[str, dict[str, torch.Tensor]]
"""Per trainable parameter name, its optimizer slots by name."""


def slot_names(spec: SgdSpec | AdamSpec) -> tuple[str, ...]:
    """The state slots ``spec`` keeps per trainable parameter."""
    return spec.slots()


def fresh_state(spec: SgdSpec | AdamSpec, params: Mapping[str, torch.Tensor]) -> OptimizerState:
    """Zero state for every parameter in ``params`` (a task's step 0)."""
    return {
        name: {slot: torch.zeros_like(param) for slot in slot_names(spec)}
        for name, param in params.items()
    }


def add_proximal(
    grads: dict[str, torch.Tensor],
    params: Mapping[str, torch.Tensor],
    anchors: Mapping[str, torch.Tensor],
    mu: float,
) -> None:
    """Add FedProx's ``mu * (w - anchor)`` to every gradient, in place."""
    if mu == 0:
        return
    for name in sorted(grads):
        grads[name].add_(params[name] - anchors[name], alpha=mu)


def clip_global_norm(grads: dict[str, torch.Tensor], max_norm: float | None) -> float:
    """Scale the gradients so their global L2 norm is at most ``max_norm``, in place.

    Returns:
        The global norm before clipping.
    """
    names = sorted(grads)
    if not names:
        return 0.0
    norms = torch.stack([torch.linalg.vector_norm(grads[n], 2.0) for n in names])
    total = torch.linalg.vector_norm(norms, 2.0)
    if max_norm is not None:
        coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for name in names:
            grads[name].mul_(coefficient)
    return float(total)


def apply_update(
    spec: SgdSpec | AdamSpec,
    params: Mapping[str, torch.Tensor],
    grads: Mapping[str, torch.Tensor],
    state: OptimizerState,
    learning_rate: float,
    step: int,
) -> None:
    """One optimizer step on ``params`` (in place, under ``no_grad``), updating ``state``.

    Args:
        spec: The optimizer and its settings.
        params: The trainable parameters by name.
        grads: Their gradients (after the proximal term and clipping).
        state: The optimizer state (see :data:`OptimizerState`), updated in place.
        learning_rate: The step's learning rate (the schedule applied).
        step: The task-local step number (0 for the first step).
    """
    with torch.no_grad():
        for name in sorted(params):
            param, grad, slots = params[name], grads[name], state[name]
            if isinstance(spec, SgdSpec):
                _sgd(spec, param, grad, slots, learning_rate)
            else:
                _adam(spec, param, grad, slots, learning_rate, step)


def _sgd(
    spec: SgdSpec,
    param: torch.Tensor,
    grad: torch.Tensor,
    slots: dict[str, torch.Tensor],
    lr: float,
) -> None:
    if spec.weight_decay:
        grad = grad.add(param, alpha=spec.weight_decay)
    if spec.momentum > 0:
        buf = slots["momentum"]
        buf.mul_(spec.momentum).add_(grad)
        grad = grad.add(buf, alpha=spec.momentum) if spec.nesterov else buf
    param.add_(grad, alpha=-lr)


def _adam(
    spec: AdamSpec,
    param: torch.Tensor,
    grad: torch.Tensor,
    slots: dict[str, torch.Tensor],
    lr: float,
    step: int,
) -> None:
    if spec.weight_decay:
        if spec.name == "adamw":
            param.mul_(1 - lr * spec.weight_decay)
        else:
            grad = grad.add(param, alpha=spec.weight_decay)
    exp_avg, exp_avg_sq = slots["exp_avg"], slots["exp_avg_sq"]
    exp_avg.lerp_(grad, 1 - spec.beta1)
    exp_avg_sq.mul_(spec.beta2).addcmul_(grad, grad, value=1 - spec.beta2)
    t = step + 1
    bias_correction1 = 1 - spec.beta1**t
    bias_correction2 = 1 - spec.beta2**t
    denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(spec.eps)
    param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)

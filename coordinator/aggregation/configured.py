"""The aggregation strategy that a job configuration (:class:`JobConfig`) names."""

from __future__ import annotations

from fedrelay.coordinator.aggregation.clipping import NormClip
from fedrelay.coordinator.aggregation.strategy import (
    Strategy,
    fedadam,
    fedavg,
    fedavgm,
    fedyogi,
    krum,
    median,
    multi_krum,
    trimmed_mean,
)
from fedrelay.protocol.job_config import InvalidJobConfig, JobConfig


def build_strategy(config: JobConfig) -> Strategy:
    """The aggregation strategy ``config`` names, with its clipping and server step.

    Raises:
        InvalidJobConfig: The strategy name is unknown (the schema already refuses it).
    """
    clip = NormClip(config.clip_norm) if config.clip_norm is not None else None
    lr = config.server_learning_rate
    match config.strategy:
        case "fedavg":
            return fedavg(clip)
        case "fedavgm":
            return fedavgm(lr, clip=clip)
        case "fedadam":
            return fedadam(lr, clip=clip)
        case "fedyogi":
            return fedyogi(lr, clip=clip)
        case "median":
            return median(clip)
        case "trimmed_mean":
            return trimmed_mean(config.trim_beta, clip)
        case "krum":
            return krum(config.byzantine, clip)
        case "multi_krum":
            return multi_krum(config.byzantine, config.keep, clip)
    raise InvalidJobConfig(f"unknown strategy {config.strategy!r}")  # pragma: no cover

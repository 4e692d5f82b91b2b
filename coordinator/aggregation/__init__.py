"""Aggregation library (pure, numpy only): combine rules, server optimisers, clipping, strategies.

Public surface: the names in ``__all__``. Everything works on flat float32 vectors; use
:class:`ParameterLayout` to move between named tensors and vectors. :class:`StreamedAggregation`
runs the same strategies over blobs read a slice of coordinates at a time.
"""

from fedrelay.coordinator.aggregation.clipping import NormClip
from fedrelay.coordinator.aggregation.errors import AggregationError, SecureAggregationUnsupported
from fedrelay.coordinator.aggregation.optimizers import (
    ServerAdaptive,
    ServerMomentum,
    ServerOptimizer,
    ServerSgd,
    ServerState,
)
from fedrelay.coordinator.aggregation.rules import (
    CombineRule,
    CoordinateMedian,
    MultiKrum,
    TrimmedMean,
    WeightedMean,
    krum_scores,
)
from fedrelay.coordinator.aggregation.strategy import (
    RoundResult,
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
from fedrelay.coordinator.aggregation.streaming import (
    StreamedAggregation,
    StreamedBlob,
    StreamedUpdate,
)
from fedrelay.coordinator.aggregation.updates import (
    ClientUpdate,
    ParameterLayout,
    Vector,
    delta_between,
)

__all__ = [
    "AggregationError",
    "ClientUpdate",
    "CombineRule",
    "CoordinateMedian",
    "MultiKrum",
    "NormClip",
    "ParameterLayout",
    "RoundResult",
    "SecureAggregationUnsupported",
    "ServerAdaptive",
    "ServerMomentum",
    "ServerOptimizer",
    "ServerSgd",
    "ServerState",
    "Strategy",
    "StreamedAggregation",
    "StreamedBlob",
    "StreamedUpdate",
    "TrimmedMean",
    "Vector",
    "WeightedMean",
    "delta_between",
    "fedadam",
    "fedavg",
    "fedavgm",
    "fedyogi",
    "krum",
    "krum_scores",
    "median",
    "multi_krum",
    "trimmed_mean",
]

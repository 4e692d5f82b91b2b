"""Classifiers of the zoo: the perceptron of the digits job and a small CNN for images."""

from __future__ import annotations

from torch import nn

from fedrelay.protocol.model_spec import CnnSpec


def mlp(inputs: int = 64, hidden: int = 64, classes: int = 10) -> nn.Module:
    """A two-layer perceptron, the default model for the digits data."""
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def cnn(spec: CnnSpec) -> nn.Module:
    """Conv3x3 (padding 1), ReLU and 2x2 max-pooling per ``spec.filters`` entry, then
    linear-ReLU-linear over the flattened feature maps."""
    layers: list[nn.Module] = []
    inputs = spec.channels
    for out in spec.filters:
        layers += [nn.Conv2d(inputs, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        inputs = out
    layers += [
        nn.Flatten(),
        nn.Linear(spec.flat_features(), spec.hidden),
        nn.ReLU(),
        nn.Linear(spec.hidden, spec.classes),
    ]
    return nn.Sequential(*layers)

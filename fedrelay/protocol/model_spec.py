"""The model a job trains, declared in its configuration: a zoo model sized by numbers, or a bundle.

The ``model`` object of a job configuration is one of these, told apart by ``kind``:

- ``mlp``: a two-layer perceptron (the digits job's model);
- ``cnn``: 3x3 convolutions with ReLU and 2x2 max-pooling, one per ``filters`` entry, then
  linear-ReLU-linear;
- ``transformer_lm``: a small decoder-only transformer language model (causal self-attention,
  learned positions);
- ``lora``: low-rank adapters on a ``transformer_lm`` whose weights (``base_weights``, a blob)
  stay frozen; only the adapters train, and an update carries only them;
- ``bundle``: the poster's own code, a content-addressed model bundle (see
  :mod:`fedrelay.training.bundles`), run only by those who trust it.

Every kind says what it is trained for (:attr:`objective`: classification or a language model)
and which tensors train (:meth:`trainable`); the built-in ones count their parameters without
building anything (:meth:`parameter_count`), so a coordinator can refuse an oversized job before
it loads torch. This module is pure: the modules themselves are built by
:func:`fedrelay.training.models.build_factory`.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

Objective = Literal["classification", "language_model"]

HASH_PATTERN = r"^[0-9a-f]{64}$"

LORA_SUFFIXES = (".lora_a", ".lora_b")
"""Names of a LoRA model's trainable tensors end in one of these."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MlpSpec(_Spec):
    """A two-layer perceptron: ``Linear(inputs, hidden)``, ReLU, ``Linear(hidden, classes)``."""

    kind: Literal["mlp"] = "mlp"
    inputs: int = Field(default=64, ge=1, le=1_000_000)
    hidden: int = Field(default=64, ge=1, le=100_000)
    classes: int = Field(default=10, ge=2, le=100_000)
    init_seed: int = Field(default=0, ge=0, lt=2**63)

    @property
    def objective(self) -> Objective:
        """A classifier."""
        return "classification"

    def trainable(self, name: str) -> bool:
        """Every tensor trains."""
        return True

    def parameter_count(self) -> int:
        """Weights and biases of both layers, without building the model."""
        return (self.inputs + 1) * self.hidden + (self.hidden + 1) * self.classes


class CnnSpec(_Spec):
    """Per ``filters`` entry a 3x3 convolution (padding 1), ReLU and 2x2 max-pooling; then
    ``Linear(flat, hidden)``, ReLU, ``Linear(hidden, classes)``. Inputs are ``(n, channels,
    height, width)`` float32."""

    kind: Literal["cnn"] = "cnn"
    channels: int = Field(default=1, ge=1, le=64)
    height: int = Field(default=28, ge=1, le=4096)
    width: int = Field(default=28, ge=1, le=4096)
    classes: int = Field(default=10, ge=2, le=100_000)
    filters: tuple[int, ...] = Field(default=(16, 32), min_length=1, max_length=8)
    hidden: int = Field(default=64, ge=1, le=100_000)
    init_seed: int = Field(default=0, ge=0, lt=2**63)

    @model_validator(mode="after")
    def _fits(self) -> Self:
        if any(not 1 <= f <= 4096 for f in self.filters):
            raise ValueError(f"filters must each be in 1..4096, got {list(self.filters)}")
        shrink = 2 ** len(self.filters)
        if self.height < shrink or self.width < shrink:
            raise ValueError(
                f"{len(self.filters)} pooling stages halve the image {len(self.filters)} times: "
                f"height and width must be at least {shrink}, got {self.height}x{self.width}"
            )
        return self

    @property
    def objective(self) -> Objective:
        """A classifier."""
        return "classification"

    def trainable(self, name: str) -> bool:
        """Every tensor trains."""
        return True

    def flat_features(self) -> int:
        """Features entering the first linear layer."""
        height, width = self.height, self.width
        for _ in self.filters:
            height, width = height // 2, width // 2
        return self.filters[-1] * height * width

    def parameter_count(self) -> int:
        """Convolution, and linear weights and biases, without building the model."""
        total, inputs = 0, self.channels
        for out in self.filters:
            total += (inputs * 9 + 1) * out
            inputs = out
        return total + (self.flat_features() + 1) * self.hidden + (self.hidden + 1) * self.classes


class TransformerLMSpec(_Spec):
    """A decoder-only transformer language model: token and learned position embeddings,
    ``layers`` pre-norm blocks (causal multi-head self-attention, a ReLU MLP of
    ``mlp_ratio * width``), a final layer norm and a linear head over the vocabulary. Trained on
    the mean next-token cross-entropy over each window."""

    kind: Literal["transformer_lm"] = "transformer_lm"
    vocab: int = Field(ge=2, le=1_000_000)
    context: int = Field(ge=1, le=65_536)
    width: int = Field(default=64, ge=1, le=16_384)
    heads: int = Field(default=4, ge=1, le=256)
    layers: int = Field(default=2, ge=1, le=128)
    mlp_ratio: int = Field(default=4, ge=1, le=16)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    init_seed: int = Field(default=0, ge=0, lt=2**63)

    @model_validator(mode="after")
    def _heads_divide(self) -> Self:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")
        return self

    @property
    def objective(self) -> Objective:
        """A language model."""
        return "language_model"

    def trainable(self, name: str) -> bool:
        """Every tensor trains."""
        return True

    def linear_shapes(self, targets: tuple[str, ...]) -> list[tuple[int, int]]:
        """``(in, out)`` of the block linear layers of ``targets`` (``attention``, ``mlp``)."""
        w, hidden = self.width, self.width * self.mlp_ratio
        per_layer: list[tuple[int, int]] = []
        if "attention" in targets:
            per_layer += [(w, 3 * w), (w, w)]
        if "mlp" in targets:
            per_layer += [(w, hidden), (hidden, w)]
        return per_layer * self.layers

    def parameter_count(self) -> int:
        """Embeddings, blocks, the final norm and the head, without building the model."""
        w = self.width
        linears = sum((i + 1) * o for i, o in self.linear_shapes(("attention", "mlp")))
        norms = (2 * self.layers + 1) * 2 * w
        embeddings = (self.vocab + self.context) * w
        return embeddings + linears + norms + (w + 1) * self.vocab


class LoraSpec(_Spec):
    """Low-rank adapters on a transformer language model whose base weights stay frozen.

    Each targeted linear layer ``W`` (``attention``: the query/key/value and output projections;
    ``mlp``: both MLP layers) gains ``lora_a`` (rank x in, seeded) and ``lora_b`` (out x rank,
    zeros) and computes ``W x + (alpha / rank) * B A x``. The job's initial model is the base
    tensors (the blob ``base_weights``) plus the adapters; only the adapters train.
    """

    kind: Literal["lora"] = "lora"
    base: TransformerLMSpec
    base_weights: str = Field(pattern=HASH_PATTERN)
    rank: int = Field(default=4, ge=1, le=4096)
    alpha: float = Field(default=8.0, gt=0)
    targets: tuple[Literal["attention", "mlp"], ...] = Field(
        default=("attention", "mlp"), min_length=1
    )
    init_seed: int = Field(default=0, ge=0, lt=2**63)

    @model_validator(mode="after")
    def _distinct_targets(self) -> Self:
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"targets must not repeat, got {list(self.targets)}")
        return self

    @property
    def objective(self) -> Objective:
        """A language model (the base's)."""
        return "language_model"

    @property
    def scale(self) -> float:
        """The adapters' output scale, ``alpha / rank``."""
        return self.alpha / self.rank

    def trainable(self, name: str) -> bool:
        """Only adapter tensors train."""
        return name.endswith(LORA_SUFFIXES)

    def adapter_count(self) -> int:
        """Parameters of the adapters alone."""
        return sum(self.rank * (i + o) for i, o in self.base.linear_shapes(self.targets))

    def parameter_count(self) -> int:
        """The base's parameters plus the adapters'."""
        return self.base.parameter_count() + self.adapter_count()


BundleArg = int | float | str | bool


class BundleSpec(_Spec):
    """The poster's own model: a content-addressed model bundle, built by its factory with
    ``args``. Tensors whose name starts with one of ``frozen`` do not train. ``signature``
    (optional, hex) is the poster's signature over the bundle hash, for workers and coordinators
    that trust bundles by signer (``fedrelay.training.trust``)."""

    kind: Literal["bundle"] = "bundle"
    bundle: str = Field(pattern=HASH_PATTERN)
    signature: str = Field(default="", pattern=r"^([0-9a-f]{130})?$")
    args: dict[str, BundleArg] = Field(default_factory=dict)
    objective: Objective = "classification"
    init_seed: int = Field(default=0, ge=0, lt=2**63)
    frozen: tuple[str, ...] = ()

    def trainable(self, name: str) -> bool:
        """Every tensor whose name does not start with a ``frozen`` prefix."""
        return not any(name.startswith(prefix) for prefix in self.frozen)

    def parameter_count(self) -> int | None:
        """Unknown until the bundle's code runs."""
        return None


ModelSpec = Annotated[
    MlpSpec | CnnSpec | TransformerLMSpec | LoraSpec | BundleSpec, Field(discriminator="kind")
]
"""The ``model`` of a job configuration (one of the kinds above, by ``kind``)."""

AnyModelSpec = MlpSpec | CnnSpec | TransformerLMSpec | LoraSpec | BundleSpec
"""The same union without its discriminator, for annotations."""


def with_default_kind(value: object) -> object:
    """A ``model`` object without ``kind`` is the perceptron (blobs written before the zoo)."""
    if isinstance(value, dict) and "kind" not in value:
        return {**value, "kind": "mlp"}
    return value

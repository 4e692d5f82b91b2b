"""Where a job's training data comes from, and how the poster evaluates its models.

A job trains on one of two kinds of data (:class:`~fedrelay.protocol.job_config.JobConfig`'s
``data``, a union on ``source``):

* ``published`` (:class:`PublishedData`): data the poster publishes, content-addressed and dealt
  into shards by :func:`fedrelay.training.data.deal_shards`. A worker's shard is the one its task
  names, of the partition the job's configuration describes: nothing on the worker's command
  line decides it, so the coordinator rebuilds exactly the shard the worker trained on and can
  replay any challenged segment.
* ``worker`` (:class:`WorkerData`): data each worker owns and never uploads. The configuration
  states its **schema** (:class:`TabularSchema`, :class:`ImageSchema`, :class:`TextSchema`); a
  worker's data that does not match it is refused before training
  (:mod:`fedrelay.training.datasets`). The coordinator cannot rebuild private data; a challenged
  segment is replayed by a **spot reveal** (``replay: "segments"``, the default): the worker
  opens exactly the examples the segment consumed, with Merkle proofs against the data root it
  committed, to the verifier only, who replays the segment on them and then erases them. The
  committed example count is the update's weight. A poster may give that up (``replay:
  "none"``, ``fedrelay job post --unverified-private-data``): no example is opened, segments
  are not replayed, and each update weighs 1.

The poster's **evaluation** (:class:`EvaluationSpec`) names the blob of its evaluation set (kept
by the coordinator, never served to workers) and the metric reported for every round. Only the
published digits job may leave it empty: it keeps the digits' own held-out split.

Example (JSON)::

    "data": {"source": "worker", "replay": "segments",
             "schema": {"kind": "tabular", "features": [64], "dtype": "float32", "classes": 10}},
    "evaluation": {"data_hash": "<64 hex>", "metric": "accuracy"}
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DataSource",
    "DataSpec",
    "EvaluationSpec",
    "FeatureDtype",
    "ImageSchema",
    "Metric",
    "PublishedData",
    "Schema",
    "TabularSchema",
    "TextSchema",
    "WorkerData",
    "default_source",
]

_HASH = r"^[0-9a-f]{64}$"
_OPTIONAL_HASH = r"^([0-9a-f]{64})?$"

FeatureDtype = Literal["float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8"]
"""The dtypes a tabular schema may state for its features (converted to float32 to train)."""

Metric = Literal["accuracy", "loss", "perplexity"]
"""What a round reports of its model on the evaluation set."""


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PublishedData(_Part):
    """Data the poster publishes: which data set, its held-out split and its shards.

    Shard ``i`` is the data of the worker drawn ``i``-th in a round; the worker takes the shard
    its task names of the partition described here (never one a flag chooses), and the
    coordinator rebuilds the same shard to replay a challenged segment.
    """

    source: Literal["published"] = "published"
    dataset: Literal["digits"] = "digits"
    shards: int = Field(default=4, ge=1, le=4096)
    partition: Literal["iid", "k_classes", "dirichlet"] = "iid"
    classes_per_client: int = Field(default=2, ge=1)
    alpha: float = Field(default=0.5, gt=0)
    seed: int = Field(default=0, ge=0, lt=2**32)
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    max_examples_per_shard: int | None = Field(default=None, ge=1)


#: The name the published data spec had before worker-owned data (older callers use it).
DataSpec = PublishedData


class TabularSchema(_Part):
    """Examples of ``features`` values each, of ``dtype``, labelled ``0..classes-1``.

    In a CSV or Parquet file every column but ``label_column`` is a feature (in file order, then
    reshaped to ``features``); an ``.npz`` holds ``features`` ``(n, *features)`` and ``labels``.
    """

    kind: Literal["tabular"] = "tabular"
    features: tuple[Annotated[int, Field(ge=1)], ...] = Field(min_length=1, max_length=4)
    dtype: FeatureDtype = "float32"
    classes: int = Field(ge=2, le=100_000)
    label_column: str = Field(default="label", min_length=1, max_length=200)

    @property
    def width(self) -> int:
        """Feature values per example (the product of ``features``)."""
        return math.prod(self.features)


class ImageSchema(_Part):
    """An image folder: one subfolder per class, every image exactly this size (none is resized).

    ``class_names`` names the subfolders in label order; without it the subfolders are named
    ``0`` .. ``classes-1``. Pixels are scaled to 0..1, laid out ``(channels, height, width)``.
    """

    kind: Literal["image"] = "image"
    channels: Literal[1, 3] = 1
    height: int = Field(ge=1, le=4096)
    width: int = Field(ge=1, le=4096)
    classes: int = Field(ge=2, le=100_000)
    class_names: tuple[Annotated[str, Field(min_length=1, max_length=200)], ...] | None = None

    @model_validator(mode="after")
    def _names(self) -> Self:
        names = self.class_names
        if names is not None:
            if len(names) != self.classes:
                raise ValueError(f"class_names has {len(names)} names for {self.classes} classes")
            if len(set(names)) != len(names):
                raise ValueError("class_names repeats a name")
            if any("/" in n or n in (".", "..") for n in names):
                raise ValueError("a class name is a folder name: no '/', '.' or '..'")
        return self

    def folder_names(self) -> tuple[str, ...]:
        """The subfolder of each label, in label order."""
        return self.class_names or tuple(str(i) for i in range(self.classes))


class TextSchema(_Part):
    """A plain-text corpus tokenized into ids ``0..vocab-1`` and cut into ``context`` windows.

    ``tokenizer``: ``bytes`` (UTF-8 bytes, vocab 256), ``chars`` (one id per character of the
    vocabulary blob, its UTF-8 text in id order) or ``named`` (the tokenizer ``name``; the one
    built in is ``longest-match``: greedy longest match over the vocabulary blob, a JSON list of
    token strings in id order). ``vocabulary_hash`` names the vocabulary blob (chars, named).
    """

    kind: Literal["text"] = "text"
    tokenizer: Literal["bytes", "chars", "named"] = "bytes"
    name: str = Field(default="", max_length=100)
    vocab: int = Field(default=256, ge=2, le=10_000_000)
    context: int = Field(default=64, ge=1, le=1_000_000)
    vocabulary_hash: str = Field(default="", pattern=_OPTIONAL_HASH)

    @model_validator(mode="after")
    def _tokenizer(self) -> Self:
        if self.tokenizer == "bytes":
            if self.vocab != 256:
                raise ValueError(f"the bytes tokenizer has vocab 256, not {self.vocab}")
            if self.vocabulary_hash or self.name:
                raise ValueError("the bytes tokenizer takes no vocabulary_hash or name")
            return self
        if not self.vocabulary_hash:
            raise ValueError(f"the {self.tokenizer} tokenizer needs vocabulary_hash (its blob)")
        if self.tokenizer == "named" and not self.name:
            raise ValueError("a named tokenizer needs its name (built in: 'longest-match')")
        if self.tokenizer == "chars" and self.name:
            raise ValueError("the chars tokenizer takes no name")
        return self


Schema = Annotated[TabularSchema | ImageSchema | TextSchema, Field(discriminator="kind")]


class WorkerData(_Part):
    """Data each worker owns (``fedrelay worker run --data PATH``), checked against ``schema``.

    Attributes:
        source: ``"worker"``.
        schema_: What the data must look like (``schema`` in JSON); data that does not match
            is refused before training, naming the mismatch.
        replay: ``"segments"`` (the default): challenged segments are replayed on the
            examples the worker opens (spot reveals; the committed count weighs the update);
            ``"none"``: no example is opened and no segment replayed (``fedrelay job post
            --unverified-private-data``); each update weighs 1.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    source: Literal["worker"] = "worker"
    schema_: Schema = Field(alias="schema")
    replay: Literal["segments", "none"] = "segments"


DataSource = Annotated[PublishedData | WorkerData, Field(discriminator="source")]


class EvaluationSpec(_Part):
    """The poster's evaluation set and the metric every round reports.

    Attributes:
        data_hash: The blob of the evaluation set (a tensor blob: ``features`` and ``labels``,
            or ``tokens``), uploaded by ``fedrelay job post --eval-data``; kept by the
            coordinator, never served to workers. Empty only for the published digits job,
            which keeps the digits' held-out split.
        metric: ``accuracy``, ``loss`` (mean cross-entropy) or ``perplexity`` (its exponential).
    """

    data_hash: str = Field(default="", pattern=_OPTIONAL_HASH)
    metric: Metric = "accuracy"


def default_source(data: object) -> object:
    """``data`` with ``source: "published"`` filled in when a configuration leaves it out.

    Configurations written before worker-owned data have no ``source``; they describe published
    data.
    """
    if isinstance(data, dict) and "source" not in data:
        return {"source": "published", **data}
    return data

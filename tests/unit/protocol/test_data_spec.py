"""The job configuration's ``data`` union and ``evaluation``: parsing, defaults and refusals."""

from __future__ import annotations

import json

import pytest

from fedrelay.protocol.data_spec import PublishedData, TextSchema, WorkerData
from fedrelay.protocol.job_config import InvalidJobConfig, JobConfig

HASH = "ab" * 32


def _config(**fields: object) -> JobConfig:
    return JobConfig.from_bytes(json.dumps(fields).encode())


def test_a_configuration_without_a_source_is_published_data() -> None:
    config = _config(data={"dataset": "digits", "shards": 2})
    assert isinstance(config.data, PublishedData)
    assert config.published_data is not None
    assert config.published_data.shards == 2
    assert config.worker_data is None
    assert config.publishes_digits
    assert json.loads(config.to_bytes())["data"]["source"] == "published"
    assert config.evaluation.metric == "accuracy"


def test_a_worker_data_configuration_round_trips_with_its_schema() -> None:
    config = _config(
        data={"source": "worker", "replay": "none",
              "schema": {"kind": "image", "channels": 3, "height": 8, "width": 8, "classes": 2,
                         "class_names": ["cat", "dog"]}},
        evaluation={"data_hash": HASH, "metric": "loss"},
    )  # fmt: skip
    assert isinstance(config.data, WorkerData)
    assert config.data.schema_.kind == "image"
    blob = config.to_bytes()
    assert b'"schema":{' in blob
    assert JobConfig.from_bytes(blob) == config


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"data": {"source": "worker", "schema": {"kind": "tabular", "features": [4],
                                                  "classes": 2}}},
         "evaluation.data_hash is required"),
        ({"data": {"source": "worker", "schema": {"kind": "image", "height": 2, "width": 2,
                                                  "classes": 3, "class_names": ["a", "b"]}},
          "evaluation": {"data_hash": HASH}},
         "class_names has 2 names for 3 classes"),
        ({"data": {"source": "worker", "schema": {"kind": "text", "tokenizer": "bytes",
                                                  "vocab": 300}},
          "evaluation": {"data_hash": HASH}},
         "the bytes tokenizer has vocab 256, not 300"),
        ({"data": {"source": "worker", "schema": {"kind": "text", "tokenizer": "chars",
                                                  "vocab": 30}},
          "evaluation": {"data_hash": HASH}},
         "the chars tokenizer needs vocabulary_hash"),
        ({"data": {"source": "worker", "schema": {"kind": "tabular", "features": [4],
                                                  "classes": 2, "colour": "red"}},
          "evaluation": {"data_hash": HASH}},
         "colour: Extra inputs are not permitted"),
        ({"data": {"source": "elsewhere"}}, "data: Input tag 'elsewhere'"),
        ({"evaluation": {"metric": "f1"}}, "evaluation.metric"),
    ],
)  # fmt: skip
def test_bad_data_and_evaluation_specs_are_refused_naming_the_problem(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidJobConfig, match=message):
        _config(**fields)


def test_a_named_tokenizer_needs_its_name() -> None:
    with pytest.raises(ValueError, match="a named tokenizer needs its name"):
        TextSchema(tokenizer="named", vocab=10, vocabulary_hash=HASH)

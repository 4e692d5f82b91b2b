"""Opening committed examples: the wire form, the checks a verifier makes, the replay on opened
examples only, and the privacy cost of spot reveals."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from fedrelay.protocol.batches import segment_indices
from fedrelay.protocol.challenges import privacy_cost
from fedrelay.protocol.data_commitment import (
    DataCommitmentError,
    ExampleKind,
    check_openings,
    decode_openings,
    encode_openings,
)
from fedrelay.protocol.data_spec import TabularSchema
from fedrelay.protocol.training_config import TrainingConfig
from fedrelay.training import TrainingError, encode_blob
from fedrelay.training.data import DataError, Dataset, OpenedData, digits
from fedrelay.training.datasets import data_tree, example_layout, open_examples, opened_data
from fedrelay.training.torch_trainer import TorchClassificationTrainer, initial_model, mlp

DATA = digits().subset(np.arange(40, dtype=np.int64))
CONFIG = TrainingConfig(seed=3, steps=6, checkpoint_every=2, batch_size=8, learning_rate=0.1)
LAYOUT = example_layout(TabularSchema(features=(64,), dtype="float32", classes=10))


def _opened(segment: int) -> tuple[list[int], bytes]:
    wanted = segment_indices(CONFIG, segment, len(DATA)).tolist()
    return wanted, encode_openings(open_examples(DATA, data_tree(DATA), wanted))


def test_openings_round_trip_and_check_against_the_commitment() -> None:
    wanted, wire = _opened(1)
    openings = decode_openings(wire)
    assert [o.index for o in openings] == wanted
    commitment = data_tree(DATA).commitment
    check_openings(commitment, ExampleKind.LABELLED, wanted, openings, LAYOUT.body_length)
    data = opened_data(LAYOUT, openings, len(DATA))
    assert len(data) == len(DATA)
    assert np.array_equal(data.data.features, DATA.features[wanted])
    assert np.array_equal(data.data.labels, DATA.labels[wanted])


def test_a_wrong_opening_is_refused_naming_what_is_wrong() -> None:
    wanted, wire = _opened(0)
    openings = decode_openings(wire)
    commitment = data_tree(DATA).commitment
    kind, length = ExampleKind.LABELLED, LAYOUT.body_length
    with pytest.raises(DataCommitmentError, match=f"not the {len(wanted)} the segment consumed"):
        check_openings(commitment, kind, wanted, openings[1:], length)
    forged = [replace(openings[0], body=b"\x00" * length), *openings[1:]]
    with pytest.raises(DataCommitmentError, match=f"example {wanted[0]} does not hash up"):
        check_openings(commitment, kind, wanted, forged, length)
    short = [replace(openings[0], body=openings[0].body[:-1]), *openings[1:]]
    with pytest.raises(DataCommitmentError, match="bytes, the job's examples are"):
        check_openings(commitment, kind, wanted, short, length)
    with pytest.raises(DataCommitmentError, match="end inside"):
        decode_openings(wire[:-3])
    with pytest.raises(DataCommitmentError, match="bytes follow"):
        decode_openings(wire + b"\x00")


def test_a_segment_replays_on_its_opened_examples_exactly_as_on_the_whole_data() -> None:
    whole = TorchClassificationTrainer(mlp, DATA)
    start = whole.initial_checkpoint(initial_model(mlp, 0), CONFIG)
    reached = whole.advance(start, 2, CONFIG)  # the start of segment 1
    _, wire = _opened(1)
    opened = TorchClassificationTrainer(mlp, opened_data(LAYOUT, decode_openings(wire), len(DATA)))
    assert encode_blob(opened.advance(reached, 2, CONFIG)) == encode_blob(
        whole.advance(reached, 2, CONFIG)
    )
    # Segment 0 draws other examples, which were not opened.
    with pytest.raises(TrainingError, match="which were not opened"):
        opened.advance(start, 2, CONFIG)


def test_the_privacy_cost_is_the_expected_share_of_examples_opened() -> None:
    n, segments = len(DATA), CONFIG.segments
    sets = [set(segment_indices(CONFIG, s, n).tolist()) for s in range(segments)]
    for opened in range(1, segments + 1):
        subsets = list(itertools.combinations(range(segments), opened))
        mean = sum(len(set().union(*(sets[s] for s in pick))) for pick in subsets) / len(subsets)
        assert privacy_cost(CONFIG, n, 0.5, opened) == pytest.approx(0.5 * mean / n)
    assert privacy_cost(CONFIG, n, 0.0, 1) == 0.0
    # Every segment replayed at rate 1: every example the task consumed at all.
    assert privacy_cost(CONFIG, n, 1.0, segments) == pytest.approx(len(set().union(*sets)) / n)
    with pytest.raises(ValueError, match="at least one example"):
        privacy_cost(CONFIG, 0, 1.0, 1)


def test_drawing_an_example_that_was_not_opened_is_an_error() -> None:
    wanted, wire = _opened(0)
    data = opened_data(LAYOUT, decode_openings(wire), len(DATA))
    with pytest.raises(DataError, match="not opened"):
        data.locate(np.asarray([i for i in range(len(DATA)) if i not in wanted][:1]))
    with pytest.raises(DataError, match="ascend"):
        OpenedData(Dataset(DATA.features[:2], DATA.labels[:2]), np.asarray([3, 1]), len(DATA))

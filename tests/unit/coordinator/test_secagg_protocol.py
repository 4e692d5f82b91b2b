"""Secure aggregation: exact unmasked sums with dropouts, sparse graphs, refusals."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrelay.coordinator.aggregation import (
    ClientUpdate,
    NormClip,
    SecureAggregationUnsupported,
    ServerState,
    fedavg,
    median,
)
from fedrelay.coordinator.simulation.secure import run_secure_sum, secure_fit
from fedrelay.protocol.secagg import (
    DealerFault,
    FixedPoint,
    KeyAdvert,
    MaskOpening,
    Participant,
    RecoveryFailed,
    SealedShares,
    SecAggConfig,
    SecureAggregationError,
    check_opening,
    check_reveals,
    harary_graph,
    shamir,
    unmask_sum,
)
from fedrelay.protocol.secagg.fixedpoint import RingVector


def make_updates(count: int, size: int, seed: int = 0) -> list[ClientUpdate]:
    rng = np.random.default_rng(seed)
    return [
        ClientUpdate(
            f"client-{i:02d}",
            rng.normal(scale=0.5, size=size).astype(np.float32),
            int(rng.integers(1, 200)),
        )
        for i in range(count)
    ]


def plain_ring_sum(fixed_point: FixedPoint, updates: list[ClientUpdate]) -> RingVector:
    total = np.zeros(updates[0].delta.shape[0], dtype=np.uint64)
    for update in updates:
        total += fixed_point.encode(update.delta, update.num_examples)
    return total


def test_unmasked_sum_equals_plain_sum_exactly_with_30_percent_dropping_after_masking() -> None:
    updates = make_updates(20, 500)
    config = SecAggConfig(round_id=b"job-1/round-3", threshold=8)
    # Six clients (30%) set up their masks and shared their keys, then vanished; one more sent
    # its masked input but did not answer the unmask phase.
    gone = [u.client_id for u in updates[::3][:6]]
    silent = [updates[1].client_id]
    result = run_secure_sum(config, updates, drop_before_input=gone, drop_before_unmask=silent)
    survivors = [u for u in updates if u.client_id not in gone]
    assert result.dropped == tuple(sorted(gone))
    assert result.contributors == tuple(sorted(u.client_id for u in survivors))
    assert result.total_weight == sum(u.num_examples for u in survivors)
    np.testing.assert_array_equal(result.total, plain_ring_sum(config.fixed_point, survivors))


def test_unmasked_sum_is_exact_when_30_percent_vanish_after_sending_masked_input() -> None:
    updates = make_updates(20, 500, seed=3)
    config = SecAggConfig(round_id=b"job-1/round-4", threshold=8)
    silent = [u.client_id for u in updates[:6]]
    result = run_secure_sum(config, updates, drop_before_unmask=silent)
    assert result.dropped == ()
    assert result.total_weight == sum(u.num_examples for u in updates)
    np.testing.assert_array_equal(result.total, plain_ring_sum(config.fixed_point, updates))


def test_sparse_secagg_plus_graph_recovers_dropouts_exactly() -> None:
    updates = make_updates(30, 300, seed=1)
    config = SecAggConfig(round_id=b"r", threshold=3, degree=8, graph_seed=b"block-hash")
    graph = config.graph([u.client_id for u in updates])
    assert {len(n) for n in graph.values()} == {8}
    assert all(a in graph[b] for a in graph for b in graph[a])
    gone = [u.client_id for u in updates[:9]]  # 30%
    result = run_secure_sum(config, updates, drop_before_input=gone)
    survivors = [u for u in updates if u.client_id not in gone]
    np.testing.assert_array_equal(result.total, plain_ring_sum(config.fixed_point, survivors))


def test_masked_inputs_reveal_nothing_like_the_update() -> None:
    updates = make_updates(3, 2000)
    config = SecAggConfig(round_id=b"r", threshold=2)
    parties = [Participant(u.client_id, config) for u in updates]
    adverts = [p.advertise() for p in parties]
    sealed = [s for p in parties for s in p.share_keys(adverts)]
    for party in parties:
        party.receive_shares([s for s in sealed if s.recipient == party.client_id])
    masked = parties[0].mask(updates[0].delta, 1).vector
    plain = config.fixed_point.encode(updates[0].delta)
    # A masked word matches the plain word only by chance (probability 2^-64 per word).
    assert not np.any(masked == plain)
    # And the high bits are uniform: about half the words have the top bit set.
    assert 0.4 < float(np.mean(masked >> np.uint64(63))) < 0.6


def test_secure_fedavg_with_clipping_matches_plain_fedavg_up_to_quantization() -> None:
    updates = make_updates(10, 100, seed=2)
    params = np.zeros(100, dtype=np.float32)
    strategy = fedavg(clip=NormClip(3.0))
    config = SecAggConfig(
        round_id=b"r", threshold=4, fixed_point=FixedPoint(clip=4.0, fractional_bits=24)
    )
    secure = secure_fit(
        strategy, params, ServerState(), config, updates, drop_before_input=["client-03"]
    )
    kept = [u for u in updates if u.client_id != "client-03"]
    plain = strategy.aggregate_fit(params, kept, ServerState())
    np.testing.assert_allclose(secure.result.params, plain.params, atol=2**-23)


def test_robust_rules_refuse_secure_aggregation_before_any_work() -> None:
    config = SecAggConfig(round_id=b"r", threshold=2)
    with pytest.raises(SecureAggregationUnsupported, match="'median' needs individual updates"):
        secure_fit(
            median(), np.zeros(4, dtype=np.float32), ServerState(), config, make_updates(3, 4)
        )


def test_too_many_dropouts_fail_recovery_with_a_clear_error() -> None:
    updates = make_updates(6, 10)
    config = SecAggConfig(round_id=b"r", threshold=4)
    with pytest.raises(SecureAggregationError, match="at least 4 are required"):
        run_secure_sum(config, updates, drop_before_input=[u.client_id for u in updates[:3]])
    silent = [u.client_id for u in updates[:3]]
    with pytest.raises(RecoveryFailed, match="need 4 shares"):
        run_secure_sum(config, updates, drop_before_unmask=silent)


def test_participant_answers_unmask_once() -> None:
    updates = make_updates(3, 4)
    config = SecAggConfig(round_id=b"r", threshold=2)
    parties = [Participant(u.client_id, config) for u in updates]
    adverts = [p.advertise() for p in parties]
    sealed = [s for p in parties for s in p.share_keys(adverts)]
    for party in parties:
        party.receive_shares([s for s in sealed if s.recipient == party.client_id])
    ids = [p.client_id for p in parties]
    parties[0].unmask(ids)
    with pytest.raises(SecureAggregationError, match="already answered"):
        parties[0].unmask(ids)


def test_tampered_shares_are_rejected() -> None:
    config = SecAggConfig(round_id=b"r", threshold=2)
    parties = [Participant(c, config) for c in ("a", "b", "c")]
    adverts = [p.advertise() for p in parties]
    sealed = parties[0].share_keys(adverts)
    for p in parties[1:]:
        p.share_keys(adverts)
    flipped = bytes([sealed[0].ciphertext[0] ^ 0x01])  # always a change (a fixed byte is not)
    bad = replace(sealed[0], ciphertext=flipped + sealed[0].ciphertext[1:])
    with pytest.raises(SecureAggregationError, match="failed authentication"):
        parties[1].receive_shares([bad])


def test_inputs_from_clients_that_never_shared_are_refused() -> None:
    updates = make_updates(3, 4)
    config = SecAggConfig(round_id=b"r", threshold=2)
    parties = [Participant(u.client_id, config) for u in updates]
    adverts = [p.advertise() for p in parties]
    sealed = [s for p in parties for s in p.share_keys(adverts)]
    for party in parties:
        party.receive_shares([s for s in sealed if s.recipient == party.client_id])
    masked = [p.mask(u.delta, 1) for p, u in zip(parties, updates, strict=True)]
    with pytest.raises(SecureAggregationError, match="from clients that shared"):
        unmask_sum(config, adverts, [p.client_id for p in parties[:2]], masked, [], sealed)


def test_shamir_any_threshold_subset_recovers() -> None:
    secret = 2**255 + 12345
    shares = shamir.split(secret, 3, [1, 2, 3, 4, 5], randbelow=random.Random(1).randrange)
    for subset in ([0, 1, 2], [1, 3, 4], [4, 2, 0]):
        assert shamir.combine([shares[i] for i in subset], 3) == secret
    wrong = shamir.combine([*shares[:2], shamir.Share(9, 1)], 3)
    assert wrong != secret
    with pytest.raises(RecoveryFailed):
        shamir.combine(shares[:2], 3)


def test_fixed_point_clips_and_round_trips() -> None:
    code = FixedPoint(clip=1.0, fractional_bits=10)
    encoded = code.encode(np.array([0.5, -0.25, 3.0, -3.0], dtype=np.float32), weight=3)
    np.testing.assert_array_equal(code.decode_sum(encoded, 3), [1.5, -0.75, 3.0, -3.0])
    with pytest.raises(SecureAggregationError, match=r"outside 1\.\."):
        code.encode(np.zeros(1, dtype=np.float32), weight=code.max_weight() + 1)


def test_harary_graph_rejects_bad_degree() -> None:
    with pytest.raises(SecureAggregationError, match="even"):
        harary_graph(["a", "b", "c", "d"], 3, b"s")


def test_mask_expansion_is_the_aes_ctr_keystream_of_the_seed() -> None:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from fedrelay.protocol.secagg import prg

    seed = bytes(range(32))
    for length in (0, 1, 32_768, 40_001):
        keystream = (
            Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor().update(bytes(8 * length))
        )
        np.testing.assert_array_equal(
            prg.expand(seed, length), np.frombuffer(keystream, dtype=np.uint64)
        )
    assert not np.array_equal(prg.expand(seed, 8), prg.expand(bytes(32), 8))
    with pytest.raises(SecureAggregationError, match="32 bytes"):
        prg.expand(b"short", 8)


@settings(max_examples=15, deadline=None)
@given(
    clients=st.integers(min_value=4, max_value=9),
    size=st.integers(min_value=1, max_value=64),
    data=st.data(),
)
def test_any_tolerable_dropout_pattern_gives_the_exact_sum(
    clients: int, size: int, data: st.DataObject
) -> None:
    updates = make_updates(clients, size, seed=data.draw(st.integers(0, 1000)))
    ids = [u.client_id for u in updates]
    threshold = 2
    # Keep at least `threshold` clients sending input and answering.
    gone = data.draw(st.lists(st.sampled_from(ids), unique=True, max_size=clients - threshold - 1))
    rest = [c for c in ids if c not in gone]
    silent = data.draw(st.lists(st.sampled_from(rest), unique=True, max_size=len(rest) - threshold))
    config = SecAggConfig(round_id=b"prop", threshold=threshold)
    result = run_secure_sum(config, updates, drop_before_input=gone, drop_before_unmask=silent)
    survivors = [u for u in updates if u.client_id not in gone]
    np.testing.assert_array_equal(result.total, plain_ring_sum(config.fixed_point, survivors))


def _dealt(
    count: int, config: SecAggConfig
) -> tuple[list[Participant], list[KeyAdvert], list[SealedShares]]:
    parties = [Participant(f"c{i}", config) for i in range(count)]
    adverts = [p.advertise() for p in parties]
    sealed = [s for p in parties for s in p.share_keys(adverts)]
    for party in parties:
        party.receive_shares([s for s in sealed if s.recipient == party.client_id])
    return parties, adverts, sealed


def test_a_revealed_share_that_is_not_the_dealt_one_names_its_holder() -> None:
    updates = make_updates(4, 6)
    config = SecAggConfig(round_id=b"r", threshold=2)
    parties, adverts, sealed = _dealt(4, config)
    masked = [p.mask(u.delta, u.num_examples) for p, u in zip(parties, updates, strict=True)]
    survivors = [m.client_id for m in masked]
    responses = [p.unmask(survivors) for p in parties]
    liar = responses[1]
    bad = replace(liar, self_mask_shares={**liar.self_mask_shares, "c0": 12345})
    responses[1] = bad
    kept, faults = check_reveals(config, sealed, responses)
    assert faults == {
        "c1": "revealed a seed share of c0 that does not match the commitment c0 dealt it with"
    }
    assert "c0" not in kept[1].self_mask_shares  # only the bad share is left out
    assert kept[1].self_mask_shares.keys() == {"c1", "c2", "c3"}
    # A share of a client that never dealt to the holder is refused too.
    foreign = replace(responses[2], key_shares={"c9": 1})
    assert check_reveals(config, sealed, [foreign])[1] == {
        "c2": "revealed a key share of c9 that c9 never dealt to it"
    }
    # The sum is recovered from the others' shares, exactly.
    secure = unmask_sum(config, adverts, survivors, masked, responses, sealed)
    assert np.array_equal(secure.total, plain_ring_sum(config.fixed_point, updates))


def test_a_dealer_whose_shares_recover_another_seed_is_named() -> None:
    updates = make_updates(3, 5)
    config = SecAggConfig(round_id=b"r", threshold=2)
    parties = [Participant(f"c{i}", config) for i in range(3)]
    adverts = [p.advertise() for p in parties]
    parties[0]._self_seed = b"\x42" * 32  # deals (and masks with) a seed it did not commit to
    sealed = [s for p in parties for s in p.share_keys(adverts)]
    for party in parties:
        party.receive_shares([s for s in sealed if s.recipient == party.client_id])
    masked = [p.mask(u.delta, u.num_examples) for p, u in zip(parties, updates, strict=True)]
    survivors = [m.client_id for m in masked]
    responses = [p.unmask(survivors) for p in parties]
    assert check_reveals(config, sealed, responses)[1] == {}  # every share is the dealt one
    with pytest.raises(DealerFault, match="'c0' recover a self-mask seed other than") as caught:
        unmask_sum(config, adverts, survivors, masked, responses, sealed)
    assert caught.value.dealer == "c0"


def test_a_dropped_dealer_whose_shares_recover_another_key_is_named() -> None:
    updates = make_updates(3, 5)
    config = SecAggConfig(round_id=b"r", threshold=2)
    parties = [Participant(f"c{i}", config) for i in range(3)]
    adverts = [p.advertise() for p in parties]
    adverts[2] = replace(adverts[2], mask_public=adverts[1].mask_public)  # advertised another key
    sealed = [s for p in parties for s in p.share_keys(adverts)]
    for party in parties[:2]:
        party.receive_shares([s for s in sealed if s.recipient == party.client_id])
    masked = [
        p.mask(u.delta, u.num_examples) for p, u in zip(parties[:2], updates[:2], strict=True)
    ]
    survivors = [m.client_id for m in masked]
    responses = [p.unmask(survivors) for p in parties[:2]]
    with pytest.raises(DealerFault, match="'c2' recover a masking key other than the advert"):
        unmask_sum(config, adverts, ["c0", "c1", "c2"], masked, responses, sealed)


def test_a_holder_refuses_shares_that_do_not_match_their_commitments() -> None:
    config = SecAggConfig(round_id=b"r", threshold=2)
    parties = [Participant(f"c{i}", config) for i in range(3)]
    adverts = [p.advertise() for p in parties]
    sealed = parties[0].share_keys(adverts)
    parties[1].share_keys(adverts)
    other = replace(sealed[0].commitments, seed=bytes(32))
    with pytest.raises(SecureAggregationError, match="from 'c0' do not match the commitments"):
        parties[1].receive_shares([replace(sealed[0], commitments=other)])


def test_the_opening_check_refuses_a_seed_other_than_the_committed_one() -> None:
    update = make_updates(3, 5)
    config = SecAggConfig(round_id=b"r", threshold=2)
    parties = [Participant(f"c{i}", config) for i in range(3)]
    adverts = [p.advertise() for p in parties]
    parties[0]._self_seed = b"\x42" * 32  # dealt, masked with and opened: not the committed one
    sealed = [s for p in parties for s in p.share_keys(adverts)]
    for party in parties:
        party.receive_shares([s for s in sealed if s.recipient == party.client_id])
    masked = parties[0].mask(update[0].delta, update[0].num_examples)
    opening = MaskOpening(*parties[0].secrets())
    roster = {a.client_id: a for a in adverts}
    peers = parties[0].masked_with
    with pytest.raises(SecureAggregationError, match="seed is not the one the worker committed"):
        check_opening(config, roster, peers, masked, opening, update[0].delta)

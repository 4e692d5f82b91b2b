"""Property tests: the parser and decoders fail only with the project's errors, codecs round-trip,
and no truncation, extension or single-bit flip of a signed VAA verifies."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from support.wormhole import guardian_set, guardian_signers, sample_round_settled

from fedrelay.protocol.wormhole import (
    TASK_REASONS,
    Commitment,
    GuardianSet,
    Outcome,
    PayloadError,
    RoundSettled,
    Settlement,
    Signature,
    SlashMode,
    StakeChanged,
    StakeReason,
    Task,
    TaskAssigned,
    UpdateCommitted,
    Vaa,
    VaaBody,
    WorkerRegistered,
    WormholeError,
    decode_payload,
    parse_vaa,
    sign_vaa,
    verify_vaa,
)

NOW = 1_767_225_600
SIGNERS = guardian_signers(19)
ONE = guardian_set(1)
NINETEEN = guardian_set(19)
BODY = VaaBody(NOW, 5, 2, bytes(12) + b"\x22" * 20, 77, 202, sample_round_settled(2).to_bytes())
SINGLE = sign_vaa(BODY, 0, [(0, SIGNERS[0])]).to_bytes()
QUORUM = sign_vaa(BODY, 0, [(i, SIGNERS[i]) for i in range(13)]).to_bytes()

u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
b32 = st.binary(min_size=32, max_size=32)

bodies = st.builds(
    VaaBody,
    timestamp=u32,
    nonce=u32,
    emitter_chain=u16,
    emitter_address=b32,
    sequence=u64,
    consistency_level=st.integers(0, 255),
    payload=st.binary(max_size=300),
)
signatures = st.builds(
    Signature, guardian_index=st.integers(0, 255), r=b32, s=b32, v=st.integers(0, 255)
)
vaas = st.builds(
    Vaa,
    guardian_set_index=u32,
    signatures=st.lists(signatures, max_size=20).map(tuple),
    body=bodies,
)

# A VAA-looking prefix (version 1, a small signature count) reaches deeper into the parser.
vaa_like_bytes = st.one_of(
    st.binary(max_size=400),
    st.tuples(u32, st.integers(0, 4), st.binary(max_size=400)).map(
        lambda t: b"\x01" + t[0].to_bytes(4, "big") + bytes((t[1],)) + t[2]
    ),
)

header = {"target_chain": u16, "target_address": b32, "job_id": u64}
payloads = st.one_of(
    st.builds(
        WorkerRegistered,
        target_chain=u16,
        target_address=b32,
        job_id=st.just(0),
        worker_key=b32,
        stake=u64,
        payout_address=b32,
        capabilities=u32,
    ),
    st.builds(
        TaskAssigned,
        **header,
        round=u32,
        deadline=u64,
        model_hash=b32,
        config_hash=b32,
        min_stake=st.just(2**64 - 1),
        stake_lock=u64,
        release_at=u64,
        tasks=st.lists(st.builds(Task, worker_key=b32, shard=u32), min_size=1, max_size=32).map(
            tuple
        ),
    ),
    st.builds(
        UpdateCommitted,
        **header,
        round=u32,
        commitments=st.lists(
            st.builds(
                Commitment,
                worker_key=b32,
                update_hash=b32,
                transcript_root=b32,
                data_root=b32,
                num_samples=u32,
                train_loss=u32,
            ),
            min_size=1,
            max_size=32,
        ).map(tuple),
    ),
    st.builds(
        RoundSettled,
        **header,
        round=u32,
        model_hash=b32,
        slash_mode=st.sampled_from(SlashMode),
        slash_recipient=b32.filter(any),
        settlements=st.lists(
            st.builds(Settlement, worker_key=b32, outcome=st.sampled_from(Outcome), slash=u64),
            min_size=1,
            max_size=32,
        ).map(tuple),
    ),
    st.builds(
        StakeChanged,
        target_chain=u16,
        target_address=b32,
        job_id=st.just(0),
        worker_key=b32,
        stake=u64,
        nonce=u64,
        reason=st.sampled_from([r for r in StakeReason if r not in TASK_REASONS]),
        task_id=st.just(bytes(32)),
    ),
    st.builds(
        StakeChanged,
        target_chain=u16,
        target_address=b32,
        job_id=st.just(0),
        worker_key=b32,
        stake=u64,
        nonce=u64,
        reason=st.sampled_from(sorted(TASK_REASONS)),
        task_id=b32,
    ),
)


SIGNED = [(SINGLE, ONE), (QUORUM, NINETEEN)]


def _never_verifies(data: bytes, guardians: GuardianSet) -> bool:
    try:
        verify_vaa(parse_vaa(data), guardians, now=NOW)
    except WormholeError:
        return True
    return False


@settings(max_examples=300)
@given(vaa_like_bytes)
def test_parser_raises_only_the_projects_error(data: bytes) -> None:
    try:
        vaa = parse_vaa(data)
    except WormholeError:
        return
    assert vaa.to_bytes() == data


@settings(max_examples=300)
@given(st.one_of(st.binary(max_size=300), payloads.map(lambda p: p.to_bytes()[:-1] + b"\x07")))
def test_payload_decoder_raises_only_the_projects_error(data: bytes) -> None:
    try:
        payload = decode_payload(data)
    except PayloadError:
        return
    assert payload.to_bytes() == data


@settings(max_examples=100)
@given(vaas)
def test_vaa_round_trips(vaa: Vaa) -> None:
    assert parse_vaa(vaa.to_bytes()) == vaa


@settings(max_examples=100)
@given(payloads)
def test_payload_round_trips(
    payload: WorkerRegistered | TaskAssigned | UpdateCommitted | RoundSettled | StakeChanged,
) -> None:
    assert decode_payload(payload.to_bytes()) == payload


def test_the_untouched_vaas_verify() -> None:
    verify_vaa(parse_vaa(SINGLE), ONE, now=NOW)
    verify_vaa(parse_vaa(QUORUM), NINETEEN, now=NOW)


def test_no_single_bit_flip_of_a_one_guardian_vaa_verifies() -> None:
    # Exhaustive: every bit of the VAA (header, signature, body, payload).
    for bit in range(len(SINGLE) * 8):
        flipped = bytearray(SINGLE)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert _never_verifies(bytes(flipped), ONE), f"bit {bit} flipped still verifies"


@settings(max_examples=200)
@given(st.integers(0, len(QUORUM) * 8 - 1))
def test_no_single_bit_flip_of_a_quorum_vaa_verifies(bit: int) -> None:
    flipped = bytearray(QUORUM)
    flipped[bit // 8] ^= 1 << (bit % 8)
    assert _never_verifies(bytes(flipped), NINETEEN)


@settings(max_examples=100)
@given(st.sampled_from(SIGNED), st.data())
def test_no_truncation_verifies(signed: tuple[bytes, GuardianSet], data: st.DataObject) -> None:
    vaa, guardians = signed
    cut = data.draw(st.integers(0, len(vaa) - 1))
    assert _never_verifies(vaa[:cut], guardians)


@settings(max_examples=100)
@given(st.sampled_from(SIGNED), st.binary(min_size=1, max_size=64))
def test_no_extension_verifies(signed: tuple[bytes, GuardianSet], extra: bytes) -> None:
    vaa, guardians = signed
    assert _never_verifies(vaa + extra, guardians)

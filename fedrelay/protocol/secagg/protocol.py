"""Secure aggregation rounds (Bonawitz et al. 2017, with the SecAgg+ sparse graph as an option).

Phases, client side (:class:`Participant`) and server side (:func:`unmask_sum`):

1. advertise: each client publishes two X25519 public keys (masking, share encryption) and a
   commitment to its self-mask seed.
2. share keys: each client Shamir-shares its masking private key and its self-mask seed among
   its graph neighbours, each share sealed to its recipient with a public commitment to each
   share (:mod:`.commitments`); the server only relays them. A holder checks its shares against
   the commitments on receipt.
3. masked input: ``y_i = w_i * q(x_i) + PRG(b_i) + sum_j +-PRG(s_ij)`` in Z/2^64, where ``s_ij``
   comes from X25519 between i and neighbour j and the sign depends on id order, so pairwise
   masks cancel in the sum.
4. unmask: for each client whose input arrived, survivors reveal shares of its self-mask seed;
   for each neighbour that shared keys but whose input never arrived, shares of its masking key,
   from which the server recomputes and removes the pairwise masks the survivors added for it.
   No client reveals both kinds of share for the same client. The server checks each revealed
   share against its dealer's commitment (a holder revealing another is named, its share left
   out) and each recovered secret against the dealer's advert (a dealer whose shares recover
   another secret is named: :class:`~.errors.DealerFault`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from fedrelay.protocol.secagg import keys, prg, shamir
from fedrelay.protocol.secagg.commitments import (
    ShareCommitments,
    ShareKind,
    seed_commitment,
    share_commitment,
)
from fedrelay.protocol.secagg.errors import DealerFault, RecoveryFailed, SecureAggregationError
from fedrelay.protocol.secagg.fixedpoint import FixedPoint, RingVector
from fedrelay.protocol.secagg.graph import Graph, complete_graph, harary_graph


@dataclass(frozen=True)
class SecAggConfig:
    """Parameters every party of one secure round agrees on.

    Attributes:
        round_id: Unique bytes per round; all derived keys and masks depend on it.
        threshold: Shares needed to recover a secret (at most neighbours + 1, since a client
            holds a share of its own secrets; more than half of that is the usual choice).
        fixed_point: How float updates map into the ring.
        degree: Neighbours per client in a SecAgg+ sparse graph; None for the complete graph.
        graph_seed: Public randomness that orders the sparse graph.
    """

    round_id: bytes
    threshold: int
    fixed_point: FixedPoint = field(default_factory=FixedPoint)
    degree: int | None = None
    graph_seed: bytes = b""

    def __post_init__(self) -> None:
        if not self.round_id:
            raise SecureAggregationError("round_id must not be empty")
        if self.threshold < 1:
            raise SecureAggregationError(f"threshold must be >= 1, got {self.threshold}")

    def graph(self, client_ids: Collection[str]) -> Graph:
        """The masking graph over ``client_ids``, checked against the threshold."""
        ids = sorted(client_ids)
        graph = (
            complete_graph(ids)
            if self.degree is None
            else harary_graph(ids, self.degree, self.graph_seed or self.round_id)
        )
        holders = min(len(n) for n in graph.values()) + 1  # neighbours and the client itself
        if self.threshold > holders:
            raise SecureAggregationError(
                f"threshold {self.threshold} exceeds the {holders} share holders a client has "
                "(its neighbours and itself)"
            )
        return graph


@dataclass(frozen=True)
class KeyAdvert:
    """Phase 1 message: a client's public keys and its commitment to its self-mask seed."""

    client_id: str
    mask_public: bytes
    share_public: bytes
    seed_commitment: bytes


@dataclass(frozen=True)
class SealedShares:
    """Phase 2 message: shares from ``sender`` for ``recipient``, encrypted to the recipient,
    with public commitments to the two shares (checked by the recipient and at unmasking)."""

    sender: str
    recipient: str
    ciphertext: bytes
    commitments: ShareCommitments


@dataclass(frozen=True)
class MaskedInput:
    """Phase 3 message: a masked, weighted, fixed-point update."""

    client_id: str
    num_examples: int
    vector: RingVector


@dataclass(frozen=True)
class UnmaskResponse:
    """Phase 4 message: share values (``y``) of self-mask seeds and of masking keys, by owner."""

    sender: str
    self_mask_shares: dict[str, int]
    key_shares: dict[str, int]


def _int_of(data: bytes) -> int:
    return int.from_bytes(data, "big")


def _private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def apply_pair_mask(total: RingVector, seed: bytes, owner: str, peer: str, remove: bool) -> None:
    """Add (or, with ``remove``, take away) ``owner``'s pairwise mask with ``peer``."""
    # The lower id adds the pair's mask and the higher id subtracts it, so the two cancel.
    adds = owner < peer
    prg.apply_mask(total, seed, negate=adds == remove)


def _index(roster: Sequence[str]) -> dict[str, int]:
    return {c: i + 1 for i, c in enumerate(sorted(roster))}


class Participant:
    """A client's side of one secure round. Holds secrets; never logs or exposes them."""

    def __init__(
        self,
        client_id: str,
        config: SecAggConfig,
        randbelow: Callable[[int], int] = secrets.randbelow,
    ) -> None:
        """Create fresh keys and a fresh self-mask seed for this round."""
        self.client_id = client_id
        self._config = config
        self._randbelow = randbelow
        self._mask_key = X25519PrivateKey.generate()
        self._share_key = X25519PrivateKey.generate()
        self._self_seed = secrets.token_bytes(prg.SEED_BYTES)
        self._adverts: dict[str, KeyAdvert] = {}
        self._graph: Graph = {}
        self._held: dict[str, tuple[int, int]] = {}
        self._own_share: tuple[int, int] | None = None
        self._peers_shared: frozenset[str] = frozenset()
        self._unmasked = False

    def advertise(self) -> KeyAdvert:
        """Phase 1: this client's public keys and its commitment to its self-mask seed."""
        return KeyAdvert(
            self.client_id,
            keys.public_bytes(self._mask_key),
            keys.public_bytes(self._share_key),
            seed_commitment(self._config.round_id, self.client_id, self._self_seed),
        )

    def share_keys(self, adverts: Sequence[KeyAdvert]) -> list[SealedShares]:
        """Phase 2: Shamir shares of this client's secrets, one sealed bundle per neighbour.

        The client keeps one share of its own secrets, so its own answer in phase 4 counts
        towards recovering its self mask.
        """
        self._adverts = {a.client_id: a for a in adverts}
        if self.client_id not in self._adverts or len(self._adverts) != len(adverts):
            raise SecureAggregationError("adverts must be distinct and include this client")
        self._graph = self._config.graph(self._adverts)
        holders = sorted(self._graph[self.client_id] | {self.client_id})
        index = _index(list(self._adverts))
        xs = [index[n] for n in holders]
        threshold = self._config.threshold
        key_shares = shamir.split(
            _int_of(_private_bytes(self._mask_key)), threshold, xs, self._randbelow
        )
        seed_shares = shamir.split(_int_of(self._self_seed), threshold, xs, self._randbelow)
        sealed = []
        for peer, key_share, seed_share in zip(holders, key_shares, seed_shares, strict=True):
            if peer == self.client_id:
                self._own_share = (key_share.y, seed_share.y)
                continue
            plaintext = key_share.y.to_bytes(shamir.SHARE_BYTES, "big") + seed_share.y.to_bytes(
                shamir.SHARE_BYTES, "big"
            )
            ciphertext = keys.seal(
                self._share_key,
                self._adverts[peer].share_public,
                self._config.round_id,
                self.client_id,
                peer,
                plaintext,
            )
            commitments = ShareCommitments(
                self._commit(self.client_id, peer, ShareKind.KEY, key_share.y),
                self._commit(self.client_id, peer, ShareKind.SEED, seed_share.y),
            )
            sealed.append(SealedShares(self.client_id, peer, ciphertext, commitments))
        return sealed

    def receive_shares(self, sealed: Sequence[SealedShares]) -> None:
        """Phase 2 (receiving): open the bundles the server relayed to this client.

        Raises:
            SecureAggregationError: A bundle is for another client, from a non-neighbour, fails
                authentication, or holds shares other than the ones its commitments commit to
                (the message names the dealer).
        """
        neighbours = self._graph.get(self.client_id, frozenset())
        opened: dict[str, tuple[int, int]] = {}
        for bundle in sealed:
            if bundle.recipient != self.client_id or bundle.sender not in neighbours:
                raise SecureAggregationError(
                    f"{self.client_id!r} cannot accept shares from {bundle.sender!r} "
                    f"addressed to {bundle.recipient!r}"
                )
            plaintext = keys.open_sealed(
                self._share_key,
                self._adverts[bundle.sender].share_public,
                self._config.round_id,
                bundle.sender,
                self.client_id,
                bundle.ciphertext,
            )
            if len(plaintext) != 2 * shamir.SHARE_BYTES:
                raise SecureAggregationError(f"shares from {bundle.sender!r} are malformed")
            key_y = _int_of(plaintext[: shamir.SHARE_BYTES])
            seed_y = _int_of(plaintext[shamir.SHARE_BYTES :])
            if (
                self._commit(bundle.sender, self.client_id, ShareKind.KEY, key_y)
                != bundle.commitments.key
                or self._commit(bundle.sender, self.client_id, ShareKind.SEED, seed_y)
                != bundle.commitments.seed
            ):
                raise SecureAggregationError(
                    f"shares from {bundle.sender!r} do not match the commitments they came with"
                )
            opened[bundle.sender] = (key_y, seed_y)
        self._peers_shared = frozenset(opened)
        if self._own_share is not None:
            opened[self.client_id] = self._own_share
        self._held = opened

    def mask(self, delta: npt.NDArray[np.float32], num_examples: int) -> MaskedInput:
        """Phase 3: the weighted fixed-point update plus self mask plus pairwise masks.

        Pairwise masks are added for every neighbour whose shares reached this client (the
        neighbours that completed phase 2).
        """
        if not self._graph:
            raise SecureAggregationError("share_keys must run before mask")
        total = self._config.fixed_point.encode(delta, num_examples)
        prg.apply_mask(total, self._self_seed)
        for peer in sorted(self._peers_shared):
            seed = keys.pair_mask_seed(
                self._mask_key,
                self._adverts[peer].mask_public,
                self._config.round_id,
                self.client_id,
                peer,
            )
            apply_pair_mask(total, seed, self.client_id, peer, remove=False)
        return MaskedInput(self.client_id, num_examples, total)

    def unmask(self, survivors: Collection[str]) -> UnmaskResponse:
        """Phase 4: for each neighbour, a self-mask share if it survived, else a key share.

        Args:
            survivors: The clients whose masked input the server received (must include this
                client and at least ``threshold`` clients).

        Raises:
            SecureAggregationError: Asked twice, or the survivor set is too small or foreign.
        """
        if self._unmasked:
            raise SecureAggregationError(
                f"{self.client_id!r} already answered the unmask phase; answering again could "
                "reveal both secrets of one client"
            )
        alive = set(survivors)
        if self.client_id not in alive or not alive <= set(self._adverts):
            raise SecureAggregationError("survivor set must include this client and only known ids")
        if len(alive) < self._config.threshold:
            raise SecureAggregationError(
                f"only {len(alive)} survivors; at least {self._config.threshold} are required"
            )
        self._unmasked = True
        self_mask_shares = {o: s for o, (_, s) in self._held.items() if o in alive}
        key_shares = {o: k for o, (k, _) in self._held.items() if o not in alive}
        return UnmaskResponse(self.client_id, self_mask_shares, key_shares)

    def _commit(self, dealer: str, holder: str, kind: ShareKind, y: int) -> bytes:
        return share_commitment(self._config.round_id, dealer, holder, kind, y)

    @property
    def masked_with(self) -> frozenset[str]:
        """The neighbours whose pairwise masks :meth:`mask` adds (their shares reached it)."""
        return self._peers_shared

    def secrets(self) -> tuple[bytes, bytes]:
        """This client's raw masking private key and self-mask seed, for a mask opening.

        Only a challenged client hands them out (to the verifier, never published); see
        :mod:`fedrelay.protocol.secagg.opening`.
        """
        return _private_bytes(self._mask_key), self._self_seed


@dataclass(frozen=True)
class SecureSum:
    """What the server learns: the ring sum of the surviving inputs and its total weight.

    Attributes:
        total: ``sum(w_i * q(x_i))`` over ``contributors`` in Z/2^64.
        total_weight: ``sum(w_i)`` over ``contributors``.
        contributors: Clients whose input is in the sum, sorted.
        dropped: Clients that shared keys but whose input never arrived, sorted.
    """

    total: RingVector
    total_weight: int
    contributors: tuple[str, ...]
    dropped: tuple[str, ...]

    def decode(self, fixed_point: FixedPoint) -> npt.NDArray[np.float32]:
        """The weighted sum as float32 (``sum(w_i * x_i)`` up to quantization)."""
        return fixed_point.decode_sum(self.total, self.total_weight).astype(np.float32)


def _recover(
    owner: str,
    shares_by_holder: Mapping[str, int],
    index: Mapping[str, int],
    threshold: int,
) -> bytes:
    points = [shamir.Share(index[h], y) for h, y in sorted(shares_by_holder.items())]
    try:
        value = shamir.combine(points, threshold)
    except RecoveryFailed as exc:
        raise RecoveryFailed(f"cannot unmask {owner!r}: {exc}") from exc
    if not 0 <= value < 2**256:
        # Every share used matched its dealer's commitment (or is the dealer's own).
        raise DealerFault(owner, f"the committed shares of {owner!r} recover no 32-byte secret")
    return value.to_bytes(32, "big")


def check_reveals(
    config: SecAggConfig,
    sealed: Sequence[SealedShares],
    responses: Sequence[UnmaskResponse],
) -> tuple[list[UnmaskResponse], dict[str, str]]:
    """Check every revealed share against the commitment its dealer sent with it.

    A holder's share of its own secrets came with no bundle and is kept as it is (a wrong one
    makes the recovered secret contradict the holder's own advert: :class:`DealerFault`).

    Args:
        config: The round's parameters.
        sealed: The round's sealed bundles (their commitments are public).
        responses: The unmasking reveals.

    Returns:
        The reveals less every share that does not match, and for each holder that revealed
        such a share, why (the first).
    """
    commitments = {(s.sender, s.recipient): s.commitments for s in sealed}
    kept: list[UnmaskResponse] = []
    faults: dict[str, str] = {}
    for response in responses:
        holder = response.sender
        checked: dict[ShareKind, dict[str, int]] = {ShareKind.KEY: {}, ShareKind.SEED: {}}
        revealed = {
            ShareKind.KEY: response.key_shares,
            ShareKind.SEED: response.self_mask_shares,
        }
        for kind, shares in revealed.items():
            for owner, y in sorted(shares.items()):
                if owner == holder:
                    checked[kind][owner] = y
                    continue
                committed = commitments.get((owner, holder))
                if committed is None:
                    reason = f"revealed a {kind} share of {owner} that {owner} never dealt to it"
                elif not 0 <= y < shamir.PRIME or (
                    share_commitment(config.round_id, owner, holder, kind, y) != committed.of(kind)
                ):
                    reason = (
                        f"revealed a {kind} share of {owner} that does not match the "
                        f"commitment {owner} dealt it with"
                    )
                else:
                    checked[kind][owner] = y
                    continue
                faults.setdefault(holder, reason)
        kept.append(UnmaskResponse(holder, checked[ShareKind.SEED], checked[ShareKind.KEY]))
    return kept, faults


def unmask_sum(
    config: SecAggConfig,
    adverts: Sequence[KeyAdvert],
    shared: Collection[str],
    masked: Sequence[MaskedInput],
    responses: Sequence[UnmaskResponse],
    sealed: Sequence[SealedShares],
) -> SecureSum:
    """Server side: add the masked inputs and remove every mask that remains.

    Revealed shares that do not match their dealer's commitment are left out
    (:func:`check_reveals` names their holders); recovery uses the others.

    Args:
        config: The round's parameters.
        adverts: Phase 1 messages (the roster).
        shared: Clients whose phase 2 shares were relayed.
        masked: Phase 3 inputs that arrived.
        responses: Phase 4 answers that arrived.
        sealed: Phase 2 bundles that were relayed (for their commitments).

    Raises:
        SecureAggregationError: Inputs from clients that did not share keys, mismatched lengths.
        RecoveryFailed: Fewer than ``threshold`` neighbours answered for some client with shares
            that match their commitments.
        DealerFault: A client's committed shares recover a self-mask seed other than the one
            its advert commits to, or a masking key other than the advertised one.
    """
    roster = {a.client_id: a for a in adverts}
    graph = config.graph(roster)
    index = _index(list(roster))
    shared_set = set(shared)
    inputs = {m.client_id: m for m in masked}
    if not inputs:
        raise SecureAggregationError("no masked inputs arrived")
    if len(inputs) != len(masked) or not set(inputs) <= shared_set <= set(roster):
        raise SecureAggregationError("masked inputs must be unique and from clients that shared")
    length = next(iter(inputs.values())).vector.shape[0]
    if any(m.vector.shape != (length,) or m.vector.dtype != np.uint64 for m in masked):
        raise SecureAggregationError("masked inputs must be uint64 vectors of one length")
    dropped = sorted(shared_set - set(inputs))
    checked, _ = check_reveals(config, sealed, responses)
    by_holder = {r.sender: r for r in checked if r.sender in inputs}

    total = np.zeros(length, dtype=np.uint64)
    for client in sorted(inputs):
        total += inputs[client].vector
    for client in sorted(inputs):
        shares = {
            h: r.self_mask_shares[client]
            for h, r in by_holder.items()
            if (h in graph[client] or h == client) and client in r.self_mask_shares
        }
        seed = _recover(client, shares, index, config.threshold)
        if seed_commitment(config.round_id, client, seed) != roster[client].seed_commitment:
            raise DealerFault(
                client,
                f"the committed shares of {client!r} recover a self-mask seed other than the "
                "one its advert commits to",
            )
        prg.apply_mask(total, seed, negate=True)
    for gone in dropped:
        shares = {
            h: r.key_shares[gone]
            for h, r in by_holder.items()
            if h in graph[gone] and gone in r.key_shares
        }
        gone_key = X25519PrivateKey.from_private_bytes(
            _recover(gone, shares, index, config.threshold)
        )
        if keys.public_bytes(gone_key) != roster[gone].mask_public:
            raise DealerFault(
                gone,
                f"the committed shares of {gone!r} recover a masking key other than the "
                "advertised one",
            )
        for peer in sorted(graph[gone] & set(inputs)):
            seed = keys.pair_mask_seed(
                gone_key, roster[peer].mask_public, config.round_id, gone, peer
            )
            apply_pair_mask(total, seed, peer, gone, remove=True)
    weight = sum(inputs[c].num_examples for c in inputs)
    return SecureSum(total, weight, tuple(sorted(inputs)), tuple(dropped))

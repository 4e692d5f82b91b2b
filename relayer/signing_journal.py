"""A guardian's signing journal: what keeps a threshold share from signing with a nonce twice.

In two-round threshold signing a signer reveals ``z_i = d_i + ρ_i·e_i - λ_i·x_i·e``. Answering two
different packages with the same nonce pair ``(d_i, e_i)`` gives two equations in the share
``x_i``, which anyone can then solve for. A guardian that crashes and is restarted, or that a
misbehaving assembler sends a second package, must therefore remember which package each of its
nonces answered, on disk, before the answer leaves: the same discipline as a validator's
slashing-protection database.

The journal is one SQLite file (``synchronous=FULL``, so a committed row survives a power loss)
holding:

- the share it belongs to (group key and identifier): a journal opened with another share is
  refused rather than silently mixed;
- a secret salt drawn when the journal was created. Nonces are derived from the share, the salt
  and the context ``(tss_index, digest, attempt)``
  (:func:`~fedrelay.protocol.wormhole.threshold.journaled_nonce`), so nothing secret is stored
  besides the salt, and a journal that is lost and recreated draws a new salt: its nonces are new;
- one row per context the guardian committed to: the commitment it published, and once it
  answered, the hash of the package it answered (:func:`~fedrelay.protocol.wormhole.threshold.
  package_digest`). A package is answered only for a context with a row (the guardian checked
  the message on its source chain before committing), and a second, different package for the
  same context is refused.

A batch's commitments are recorded in one transaction (:meth:`SigningJournal.commit_many`), and
so are its answers (:meth:`SigningJournal.answer_many`): one synchronous write per batch, not per
message. Each answer still leaves only after the transaction that records it has committed.

The file holds the salt: keep it as private as the share itself.
"""

from __future__ import annotations

import secrets
import sqlite3
import struct
import threading
from collections.abc import Sequence
from pathlib import Path

from fedrelay.protocol.wormhole.errors import ThresholdSigningError
from fedrelay.protocol.wormhole.threshold import (
    KeyShare,
    NonceCommitment,
    PartialSignature,
    journaled_nonce,
    package_digest,
    sign_share,
)
from fedrelay.relayer.errors import RelayerError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    group_key BLOB NOT NULL,
    identifier INTEGER NOT NULL,
    salt BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS nonces (
    tss_index INTEGER NOT NULL,
    digest BLOB NOT NULL,
    attempt INTEGER NOT NULL,
    commitment BLOB NOT NULL,
    package BLOB,
    PRIMARY KEY (tss_index, digest, attempt)
);
"""


class JournalError(RelayerError):
    """The journal cannot be used with this share (another share's journal, an unreadable file)."""


class PackageRefused(RelayerError):
    """The guardian will not answer this package (the message says why); nothing was revealed."""


def _context(tss_index: int, digest: bytes, attempt: int) -> bytes:
    return struct.pack(">I", tss_index) + digest + struct.pack(">I", attempt)


class SigningJournal:
    """One guardian's threshold share and its journal (see the module docstring).

    Safe to share between the tasks of one process (a lock serialises the file's use); two
    processes must never share one journal file with one share.
    """

    def __init__(self, share: KeyShare, path: Path) -> None:
        """Open (or create) the journal at `path` for `share`.

        Raises:
            JournalError: The file belongs to another share or is not a journal.
        """
        self.share = share
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._salt = self._bind()
        except sqlite3.Error as exc:
            raise JournalError(f"signing journal {path}: {exc}") from None

    def _bind(self) -> bytes:
        row = self._db.execute("SELECT group_key, identifier, salt FROM journal").fetchone()
        if row is None:
            salt = secrets.token_bytes(32)
            self._db.execute(
                "INSERT INTO journal (id, group_key, identifier, salt) VALUES (1, ?, ?, ?)",
                (self.share.group_key, self.share.identifier, salt),
            )
            return salt
        group_key, identifier, salt = bytes(row[0]), int(row[1]), bytes(row[2])
        if group_key != self.share.group_key or identifier != self.share.identifier:
            raise JournalError(
                f"signing journal {self.path} belongs to signer {identifier} of group key "
                f"0x{group_key.hex()}, not signer {self.share.identifier} of 0x"
                f"{self.share.group_key.hex()}: give each share its own journal"
            )
        return salt

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()

    def commit(self, tss_index: int, digest: bytes, attempt: int) -> NonceCommitment:
        """Round one for a context: the commitment to publish, recorded (again, the same one).

        Call it only after checking the message on its source chain: recording the context is
        what later allows a package for it to be answered.
        """
        (commitment,) = self.commit_many(tss_index, [(digest, attempt)])
        return commitment

    def commit_many(
        self, tss_index: int, contexts: Sequence[tuple[bytes, int]]
    ) -> list[NonceCommitment]:
        """Round one for several contexts of key `tss_index` (`(digest, attempt)` each), recorded
        in one transaction, so one synchronous write covers them all: their commitments, in
        order. Call it only after checking each message on its source chain.

        A failure to write (the disk is full) raises ``sqlite3.Error`` and records none of them:
        the stage runner takes it for an infrastructure failure and tries the records again.
        """
        commitments = [
            journaled_nonce(self.share, self._salt, _context(tss_index, digest, attempt)).commitment
            for digest, attempt in contexts
        ]
        rows = [
            (tss_index, digest, attempt, c.hiding + c.binding)
            for (digest, attempt), c in zip(contexts, commitments, strict=True)
        ]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO nonces (tss_index, digest, attempt, commitment) "
                    "VALUES (?, ?, ?, ?)",
                    rows,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return commitments

    def recommit(self, tss_index: int, digest: bytes, attempt: int) -> NonceCommitment:
        """Round one of a later attempt, for a digest this guardian committed to before (so it
        checked the message on its source chain); recorded like :meth:`commit`.

        Raises:
            PackageRefused: The guardian never committed to the digest's first attempt.
        """
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM nonces WHERE tss_index = ? AND digest = ? AND attempt = 0",
                (tss_index, digest),
            ).fetchone()
        if row is None:
            raise PackageRefused(
                f"key {tss_index}, digest 0x{digest.hex()}: a retry for a digest this guardian "
                "never committed to (it did not check the message on its source chain)"
            )
        return self.commit(tss_index, digest, attempt)

    def answer(
        self,
        tss_index: int,
        digest: bytes,
        attempt: int,
        commitments: Sequence[NonceCommitment],
    ) -> PartialSignature:
        """Round two: this signer's partial signature for the package, recorded before it is
        returned. The same package again gets the same answer (a replay after a restart).

        Raises:
            PackageRefused: The guardian never committed to this context, the package does not
                hold its commitment as published, or it answered another package for the context.
        """
        (answer,) = self.answer_many([(tss_index, digest, attempt, commitments)])
        if isinstance(answer, PackageRefused):
            raise answer
        return answer

    def answer_many(
        self, packages: Sequence[tuple[int, bytes, int, Sequence[NonceCommitment]]]
    ) -> list[PartialSignature | PackageRefused]:
        """Round two for several packages (`(tss_index, digest, attempt, commitments)` each),
        recorded in one transaction, so one synchronous write covers them all: per package, in
        order, the partial signature, or why it is refused (as :meth:`answer` refuses; a refusal
        records nothing and leaves the others be).

        A failure to write raises ``sqlite3.Error`` and records none of them (nothing was
        revealed): the stage runner tries the records again.
        """
        checked: list[tuple[bytes, str] | PackageRefused] = []
        for tss_index, digest, attempt, commitments in packages:
            checked.append(self._package(tss_index, digest, attempt, commitments))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for index, (tss_index, digest, attempt, _) in enumerate(packages):
                    item = checked[index]
                    if not isinstance(item, PackageRefused):
                        checked[index] = self._record(tss_index, digest, attempt, *item)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        answers: list[PartialSignature | PackageRefused] = []
        for (tss_index, digest, attempt, commitments), item in zip(packages, checked, strict=True):
            if isinstance(item, PackageRefused):
                answers.append(item)
                continue
            nonce = journaled_nonce(self.share, self._salt, _context(tss_index, digest, attempt))
            try:
                answers.append(sign_share(self.share, nonce, digest, commitments))
            except ThresholdSigningError as exc:
                answers.append(PackageRefused(f"{item[1]}: {exc}"))
        return answers

    def _package(
        self, tss_index: int, digest: bytes, attempt: int, commitments: Sequence[NonceCommitment]
    ) -> tuple[bytes, str] | PackageRefused:
        """A package's hash and its label, or why it is refused before the journal is read."""
        nonce = journaled_nonce(self.share, self._salt, _context(tss_index, digest, attempt))
        label = f"key {tss_index}, digest 0x{digest.hex()}, attempt {attempt}"
        if nonce.commitment not in commitments:
            return PackageRefused(
                f"{label}: the package does not hold signer {self.share.identifier}'s "
                "commitment as this guardian published it"
            )
        try:
            return package_digest(digest, commitments), label
        except ThresholdSigningError as exc:
            return PackageRefused(f"{label}: {exc}")

    def _record(
        self, tss_index: int, digest: bytes, attempt: int, package: bytes, label: str
    ) -> tuple[bytes, str] | PackageRefused:
        """Within a transaction: record that the context's nonce answers `package`, or why it
        may not."""
        row = self._db.execute(
            "SELECT package FROM nonces WHERE tss_index = ? AND digest = ? AND attempt = ?",
            (tss_index, digest, attempt),
        ).fetchone()
        if row is None:
            return PackageRefused(
                f"{label}: this guardian never committed to it (it did not check the "
                "message on its source chain); not signed"
            )
        if row[0] is not None and bytes(row[0]) != package:
            return PackageRefused(
                f"{label}: the nonce already answered package 0x{bytes(row[0]).hex()}; "
                f"answering 0x{package.hex()} with it would reveal the key share"
            )
        if row[0] is None:
            self._db.execute(
                "UPDATE nonces SET package = ? WHERE tss_index = ? AND digest = ? AND attempt = ?",
                (package, tss_index, digest, attempt),
            )
        return package, label

    def answered(self, tss_index: int, digest: bytes, attempt: int) -> bytes | None:
        """The hash of the package answered for a context, if any (for operators and tests)."""
        with self._lock:
            row = self._db.execute(
                "SELECT package FROM nonces WHERE tss_index = ? AND digest = ? AND attempt = ?",
                (tss_index, digest, attempt),
            ).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

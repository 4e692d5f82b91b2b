"""threshold_packages.failed_from, left_out: the record that failed an attempt, whom it leaves out

``failed_from`` is the bus position of the record that failed the attempt (indexed: a replayed
record finds the packages it failed by it, as ``vaas.assembled_from`` finds its VAAs);
``left_out`` the signers the failure leaves out of the digest's later attempts, as big-endian
u16 identifiers, increasing. Upgrading fills ``left_out`` of the packages failed before it from
what revision 0004 kept: the ``blamed`` signer, and the ``threshold_parts`` rows of kind
``silent``. Those rows, and the ticks' ``retried`` notes, are left where they are (migrations are
additive: the previous release reads them until its pods are replaced) and are read no more; a
tick taken before the upgrade and replayed after it emits its version-1 VAAs again but not its
retries (their attempts, never committed to, time out to version 1). Downgrading writes
``silent`` rows for the timeouts failed since the upgrade (``left_out`` without ``blamed``), not
``retried`` notes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_packages = sa.table(
    "threshold_packages",
    sa.column("id", sa.BigInteger()),
    sa.column("digest", sa.LargeBinary()),
    sa.column("tss_index", sa.BigInteger()),
    sa.column("attempt", sa.BigInteger()),
    sa.column("failure", sa.String()),
    sa.column("blamed", sa.Integer()),
    sa.column("left_out", sa.LargeBinary()),
    sa.column("failed_from", sa.String()),
)
_parts = sa.table(
    "threshold_parts",
    sa.column("digest", sa.LargeBinary()),
    sa.column("tss_index", sa.BigInteger()),
    sa.column("attempt", sa.BigInteger()),
    sa.column("identifier", sa.Integer()),
    sa.column("kind", sa.String()),
    sa.column("data", sa.LargeBinary()),
    sa.column("added_at", sa.DateTime(timezone=True)),
)


def _encode(identifiers: set[int]) -> bytes:
    return b"".join(identifier.to_bytes(2, "big") for identifier in sorted(identifiers))


def _decode(data: bytes) -> list[int]:
    return [int.from_bytes(data[at : at + 2], "big") for at in range(0, len(data), 2)]


def upgrade() -> None:
    with op.batch_alter_table("threshold_packages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failed_from", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("left_out", sa.LargeBinary(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_threshold_packages_failed_from"), ["failed_from"], unique=False
        )

    bind = op.get_bind()
    silent: dict[tuple[bytes, int, int], set[int]] = {}
    for digest, tss_index, attempt, identifier in bind.execute(
        sa.select(_parts.c.digest, _parts.c.tss_index, _parts.c.attempt, _parts.c.identifier)
        .where(_parts.c.kind == "silent")
    ):  # fmt: skip
        silent.setdefault((bytes(digest), tss_index, attempt), set()).add(identifier)
    left_out = []
    for row_id, digest, tss_index, attempt, blamed in bind.execute(
        sa.select(_packages.c.id, _packages.c.digest, _packages.c.tss_index,
                  _packages.c.attempt, _packages.c.blamed)
        .where(_packages.c.failure.is_not(None))
    ):  # fmt: skip
        identifiers = set(silent.get((bytes(digest), tss_index, attempt), set()))
        if blamed is not None:
            identifiers.add(blamed)
        left_out.append({"row_id": row_id, "new_left_out": _encode(identifiers)})
    if left_out:
        bind.execute(
            _packages.update()
            .where(_packages.c.id == sa.bindparam("row_id"))
            .values(left_out=sa.bindparam("new_left_out")),
            left_out,
        )


def downgrade() -> None:
    bind = op.get_bind()
    now = datetime.now(UTC)
    silent = [
        {"digest": digest, "tss_index": tss_index, "attempt": attempt, "identifier": identifier,
         "kind": "silent", "data": b"", "added_at": now}
        for digest, tss_index, attempt, encoded in bind.execute(
            sa.select(_packages.c.digest, _packages.c.tss_index, _packages.c.attempt,
                      _packages.c.left_out)
            .where(_packages.c.failed_from.is_not(None), _packages.c.blamed.is_(None))
        )
        for identifier in _decode(bytes(encoded or b""))
    ]  # fmt: skip
    if silent:
        bind.execute(_parts.insert(), silent)

    with op.batch_alter_table("threshold_packages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_threshold_packages_failed_from"))
        batch_op.drop_column("left_out")
        batch_op.drop_column("failed_from")

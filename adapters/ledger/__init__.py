"""The ledger: SQLAlchemy 2 models, engines and Alembic migrations.

PostgreSQL in production, SQLite in the embedded mode; the same models and migrations serve both.

Importing the package loads no service's tables: the relayer's (``models``, with its port in
``relayer_ledger``) and the coordinator's (``coordinator_models``, ``coordinator_store``) load when
their modules are imported. Whoever needs the whole schema (Alembic, ``fedrelay db``) calls
:func:`load_all_models`.
"""

from __future__ import annotations

import importlib

from fedrelay.adapters.ledger.database import LedgerError, LedgerSettings, create_engine, upgrade

__all__ = ["LedgerError", "LedgerSettings", "create_engine", "load_all_models", "upgrade"]

_MODEL_MODULES = (
    "fedrelay.adapters.ledger.models",
    "fedrelay.adapters.ledger.coordinator_models",
    "fedrelay.adapters.ledger.coordinator_store",
)


def load_all_models() -> None:
    """Register every service's tables on the shared metadata (one schema for Alembic)."""
    for name in _MODEL_MODULES:
        importlib.import_module(name)

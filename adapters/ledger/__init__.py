"""The ledger: SQLAlchemy 2 models, engines and Alembic migrations.

PostgreSQL in production, SQLite in the embedded mode; the same models and migrations serve both.
"""

# Registers the coordinator's tables on the shared metadata, so Alembic and every importer of
# the ledger see one schema.
from fedrelay.adapters.ledger import coordinator_models, coordinator_store  # noqa: F401
from fedrelay.adapters.ledger.database import LedgerError, LedgerSettings, create_engine, upgrade

__all__ = ["LedgerError", "LedgerSettings", "create_engine", "upgrade"]

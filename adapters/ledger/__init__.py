"""The ledger: SQLAlchemy 2 models, engines and Alembic migrations.

PostgreSQL in production, SQLite in the embedded mode; the same models and migrations serve both.
"""

from adapters.ledger.database import LedgerError, LedgerSettings, create_engine, upgrade

__all__ = ["LedgerError", "LedgerSettings", "create_engine", "upgrade"]

"""Where the ledger lives when nothing says otherwise.

Settings of every service (the relayer's, the ledger adapter's own) default to the same file, so
an embedded run finds one ledger; the URL is a plain string, and only the ledger adapter opens it.
"""

from __future__ import annotations

#: The embedded mode's ledger: a SQLite file under ``.fedrelay/`` of the working directory.
DEFAULT_URL = "sqlite+aiosqlite:///.fedrelay/ledger.db"

"""Check that the worker's extra installs none of the other roles' packages.

A GPU owner installs ``pip install 'fedrelay[worker]'``; the coordinator's web stack, the
relayer's ledger and bus and the demo's plots must not come with it. pip resolves the extra
without installing anything and writes what it would install to a report; this script reads
that report::

    .venv/bin/python -m pip install --dry-run --ignore-installed --quiet \\
        -c requirements.lock --report /tmp/worker-report.json '.[worker]'
    .venv/bin/python tools/check_worker_extra.py /tmp/worker-report.json

It prints the packages the extra resolves to and exits 1, naming them, if any forbidden package
is among them. (Resolving needs the package index; the unit tests check this script on reports
written by hand.)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

#: Packages of the other roles' extras (distribution names, compared normalised).
FORBIDDEN = ("fastapi", "uvicorn", "sqlalchemy", "alembic", "aiokafka", "matplotlib")


def normalise(name: str) -> str:
    """A distribution name in its canonical form (PEP 503: lower case, runs of -_. as -)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def resolved(report: dict[str, object]) -> list[str]:
    """The canonical names of the distributions a pip installation report would install."""
    install = report.get("install")
    if not isinstance(install, list):
        raise ValueError("not a pip installation report: no 'install' list")
    return sorted(normalise(str(item["metadata"]["name"])) for item in install)


def forbidden_in(names: Iterable[str], forbidden: Iterable[str] = FORBIDDEN) -> list[str]:
    """Those of ``forbidden`` that are among ``names`` (canonical names)."""
    wanted = {normalise(n) for n in forbidden}
    return sorted(wanted.intersection(normalise(n) for n in names))


def main(argv: Sequence[str] | None = None) -> int:
    """Read the report named on the command line; 0 when no forbidden package is in it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("report", type=Path, help="pip install --dry-run --report FILE output")
    args = parser.parse_args(argv)
    names = resolved(json.loads(args.report.read_text()))
    print(f"the worker extra resolves to {len(names)} distributions: {' '.join(names)}")
    found = forbidden_in(names)
    if found:
        print(f"error: the worker extra would install {', '.join(found)}", file=sys.stderr)
        return 1
    print(f"none of {', '.join(FORBIDDEN)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

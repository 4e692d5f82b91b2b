"""Which extra a role's command needs, and the one-line hint when it is not installed.

``pip install fedrelay`` brings only what every role shares; each role's packages come with its
extra (``fedrelay[worker]``, ``fedrelay[relayer]``, ``fedrelay[coordinator]``,
``fedrelay[demo]``; see pyproject.toml). A command whose role's packages are missing says which
extra to install instead of ending in a traceback. A missing module that belongs to no package
of the role is a fault, not a missing extra, and is raised as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

# Import names (modules and their submodules) of each extra's packages and what those pull in.
_CHAINS = ("web3", "eth_abi", "requests", "aiohttp", "solana", "httpx")
_SPANS = ("opentelemetry.sdk", "opentelemetry.exporter")
_STORE = ("sqlalchemy", "alembic", "aiosqlite", "asyncpg", "greenlet")
_WEB = ("fastapi", "starlette", "uvicorn", "prometheus_client")
_TRAINING = ("torch", "sklearn", "scipy")

#: The import names each role's extra provides.
ROLE_MODULES: dict[str, tuple[str, ...]] = {
    "worker": (*_TRAINING, *_CHAINS, *_SPANS),
    "relayer": ("aiokafka", *_STORE, *_WEB, *_CHAINS, *_SPANS),
    "coordinator": (*_STORE, *_WEB, *_TRAINING, *_CHAINS, *_SPANS),
    "demo": ("matplotlib", "aiokafka", *_STORE, *_WEB, *_TRAINING, *_CHAINS, *_SPANS),
}


def install_hint(role: str) -> str:
    """What to install for ``role``'s commands."""
    return f"the {role} needs `pip install 'fedrelay[{role}]'`"


def provided_by(role: str, module: str | None) -> bool:
    """Whether ``module`` (as ModuleNotFoundError names it) comes with ``role``'s extra."""
    if not module:
        return False
    return any(module == name or module.startswith(name + ".") for name in ROLE_MODULES[role])


def unavailable(role: str, error: ModuleNotFoundError) -> typer.Exit:
    """Print the install hint for ``role`` (naming the missing module); the exit to raise."""
    Console(stderr=True).print(
        f"[red]error:[/red] {escape(install_hint(role))} (no module named {error.name!r})",
        highlight=False,
        soft_wrap=True,
    )
    return typer.Exit(2)


@contextmanager
def requires(role: str) -> Iterator[None]:
    """Turn a missing package of ``role``'s extra into the install hint and exit 2.

    Raises:
        typer.Exit: A module of the role's extra is not installed.
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        if not provided_by(role, exc.name):
            raise
        raise unavailable(role, exc) from None

"""`fedrelay db ...`: the ledger's schema."""

from __future__ import annotations

import asyncio

import typer

from fedrelay.adapters.ledger.database import (
    LedgerError,
    LedgerSettings,
    current_revision,
    downgrade,
    revisions_to_undo,
    upgrade,
)

app = typer.Typer(help="Manage the ledger database schema.", no_args_is_help=True)

_URL_HELP = "SQLAlchemy async URL; default: $FEDRELAY_DATABASE_URL or the embedded SQLite file."


def _url(url: str | None) -> str:
    return url or LedgerSettings().database_url


@app.command("upgrade")
def upgrade_command(
    revision: str = typer.Argument("head", help="Target revision."),
    url: str | None = typer.Option(None, "--url", help=_URL_HELP),
) -> None:
    """Apply the ledger migrations up to REVISION (idempotent)."""
    target = _url(url)
    try:
        upgrade(target, revision)
        now = asyncio.run(current_revision(target))
    except LedgerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"ledger at revision {now}")


@app.command("current")
def current_command(url: str | None = typer.Option(None, "--url", help=_URL_HELP)) -> None:
    """Print the ledger's current revision ("none" for an empty database)."""
    try:
        typer.echo(asyncio.run(current_revision(_url(url))) or "none")
    except LedgerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command("downgrade")
def downgrade_command(
    revision: str = typer.Argument(..., help="Target revision (e.g. 0002), or base for none."),
    url: str | None = typer.Option(None, "--url", help=_URL_HELP),
    yes: bool = typer.Option(False, "--yes", help="Really undo the migrations (drops data)."),
) -> None:
    """Undo the ledger migrations above REVISION; without --yes, only say what would be undone."""
    target = _url(url)
    try:
        now = asyncio.run(current_revision(target))
        undone = revisions_to_undo(target, now, revision)
    except LedgerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not undone:
        typer.echo(f"ledger at revision {now or 'none'}: nothing to undo")
        return
    typer.echo(f"from revision {now} down to {revision}, these migrations would be undone:")
    for undo, what in undone:
        typer.echo(f"  {undo}  {what}")
    if not yes:
        typer.echo("their tables and columns, and the data in them, would be dropped", err=True)
        typer.echo("error: refusing without --yes", err=True)
        raise typer.Exit(2)
    try:
        downgrade(target, revision)
        now = asyncio.run(current_revision(target))
    except LedgerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"ledger at revision {now or 'none'}")

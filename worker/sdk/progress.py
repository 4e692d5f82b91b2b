"""How a running worker shows what it is doing: a live line per phase with rich, or nothing."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from fedrelay.ports.worker_chain import TaskKey


class ProgressReporter(Protocol):
    """Receives the worker's phases; implementations must not raise."""

    def phase(self, key: TaskKey, name: str, total: int | None = None) -> None:
        """Task ``key`` entered phase ``name`` (with ``total`` units of work, if counted)."""
        ...

    def advance(self, key: TaskKey, done: int) -> None:
        """``done`` units of the current phase are complete."""
        ...

    def note(self, text: str) -> None:
        """A one-line event (registration, settlement, challenge answered)."""
        ...


class SilentProgress:
    """Shows nothing (tests, library use)."""

    def phase(self, key: TaskKey, name: str, total: int | None = None) -> None:
        """Ignore the phase."""

    def advance(self, key: TaskKey, done: int) -> None:
        """Ignore progress."""

    def note(self, text: str) -> None:
        """Ignore the note."""


class RichProgress:
    """One live line per task (phase, bar while training), and notes printed above them."""

    def __init__(self, console: Console | None = None) -> None:
        """Prepare the display on ``console`` (stderr by default)."""
        self._console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.fields[key]}[/bold]"),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=self._console,
        )
        self._rows: dict[TaskKey, TaskID] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def phase(self, key: TaskKey, name: str, total: int | None = None) -> None:
        """Show ``name`` on the task's line, resetting its bar."""
        label = f"job {key.job_id} round {key.round}"
        row = self._rows.get(key)
        if row is None:
            self._rows[key] = self._progress.add_task(name, total=total, key=label)
        else:
            self._progress.reset(row, total=total, description=name)

    def advance(self, key: TaskKey, done: int) -> None:
        """Move the task's bar."""
        row = self._rows.get(key)
        if row is not None:
            self._progress.update(row, completed=done)

    def note(self, text: str) -> None:
        """Print ``text`` above the live lines."""
        self._progress.console.log(text)

"""Where the demo says what it is doing: a protocol the command line implements, and a quiet one.

The demo never prints: it reports steps, one-line events and the job's round to a
:class:`DemoProgress`. ``fedrelay demo`` renders them as a live status line; tests pass
:class:`QuietProgress`. Worker nodes report through :class:`WorkerNotes`, which labels each note
with the worker it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fedrelay.ports.worker_chain import TaskKey
from fedrelay.protocol.rounds import RoundState


class DemoProgress(Protocol):
    """Where the demo reports what it is doing; implementations must not raise."""

    def step(self, text: str) -> None:
        """A set-up or tear-down step begins."""
        ...

    def note(self, text: str) -> None:
        """A one-line event (a worker's note, a round's result)."""
        ...

    def round(self, state: RoundState, accuracy: float | None) -> None:
        """The job's current round and the last proposed model's accuracy."""
        ...


class QuietProgress:
    """Reports nothing (tests)."""

    def step(self, text: str) -> None:
        """Ignore the step."""

    def note(self, text: str) -> None:
        """Ignore the note."""

    def round(self, state: RoundState, accuracy: float | None) -> None:
        """Ignore the round."""


@dataclass
class WorkerNotes:
    """A worker node's progress reporter that passes its notes on, labelled."""

    label: str
    progress: DemoProgress

    def phase(self, key: TaskKey, name: str, total: int | None = None) -> None:
        """Phases are not shown (the round line says where the job is)."""

    def advance(self, key: TaskKey, done: int) -> None:
        """Training steps are not shown."""

    def note(self, text: str) -> None:
        """Show the note with the worker's label."""
        self.progress.note(f"{self.label}: {text}")

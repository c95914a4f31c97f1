"""The progress bar over a run: every phase of every system, and a line for each."""

from __future__ import annotations

from types import TracebackType

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress


class Progress:
    """A rich progress bar over every phase of every system (quiet when not shown)."""

    def __init__(self, total: int, *, show: bool = True) -> None:
        self.show = show
        self._bar = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            disable=not show,
        )
        self._task = self._bar.add_task("bench", total=total)
        self._current: str | None = None
        self._done: dict[str, int] = {}
        self._per_system = 0

    def __enter__(self) -> Progress:
        self._bar.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bar.update(self._task, completed=self._bar.tasks[0].total)
        self._bar.__exit__(exc_type, exc, tb)

    def step(self, system: str, what: str) -> None:
        self._bar.update(self._task, description=f"{system}: {what}")
        self._bar.advance(self._task)
        if self.show:  # a line too, for a log or a terminal that shows no bar
            done = int(self._bar.tasks[0].completed)
            self._bar.console.print(f"[{done}/{self._bar.tasks[0].total:g}] {system}: {what}")

    def add(self, steps: int) -> None:
        """More steps than the bar was made for (head-to-heads, known only at the end)."""
        if steps:
            self._bar.update(self._task, total=(self._bar.tasks[0].total or 0) + steps)

    def skip(self, system: str, why: str) -> None:
        self._bar.console.print(f"[yellow]skipped {system}[/]: {why}")

"""The progress bar of a generate run (rich, on stderr): done/total, rate, ETA, tokens, cost.
Quiet mode (cron) shows nothing."""
from __future__ import annotations

from typing import Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pipeline.teachers.base import TeacherResponse


def format_cost(cost: float | None) -> str:
    return "cost unknown" if cost is None else f"${cost:.4f}"


class GenerateProgress:
    """``with GenerateProgress(label, total, quiet) as bar: bar.answer(resp, cost)``."""

    def __init__(self, label: str, total: int, *, quiet: bool, priced: bool):
        self.tokens = 0
        self.quiet = quiet
        self.cost: float | None = 0.0 if priced else None
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[tokens]} tok  {task.fields[cost]}"),
            console=Console(stderr=True),
            disable=quiet,
            transient=False,
        )
        self._task = self._progress.add_task(label, total=total, rate="", tokens=0, cost=format_cost(self.cost))

    def answer(self, resp: TeacherResponse, cost: float | None) -> None:
        self.tokens += resp.usage.total_tokens
        if self.cost is not None:
            self.cost = None if cost is None else self.cost + cost
        if self.quiet:
            return
        task = self._progress.tasks[0]
        # Over the whole run, not rich's recent-window speed: in-process backends answer a batch at
        # one instant, which makes a windowed rate read thousands of requests per second.
        elapsed = task.elapsed or 0.0
        speed = (task.completed + 1) / elapsed if elapsed > 0 else None
        self._progress.update(
            self._task, advance=1, tokens=self.tokens, cost=format_cost(self.cost),
            rate=f"{speed:.1f} req/s" if speed else "",
        )

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

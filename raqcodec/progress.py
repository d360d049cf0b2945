"""The one progress bar: batch runs (files), ``raqcodec rd`` (images x settings) and training (steps).

A rich bar on stderr (stdout carries data and ``--json`` records), shown only when asked for (the callers
pass whether stderr is a terminal and the user did not say ``-q``): label, bar, done/total, optionally a
rate in units per second and a line of fields, elapsed time, optionally the time remaining.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _Rate(ProgressColumn):
    """Units per second, e.g. "2.5 files/s" ("- files/s" before the first is done)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} {self.unit}/s" if speed else f"- {self.unit}/s")


def progress_bar(
    show: bool,
    *,
    label: str = "{task.description}",
    rate: str | None = None,
    fields: str | None = None,
    eta: bool = False,
) -> Progress:
    """A bar (disabled unless ``show``). ``label``: the first column's template; ``rate``: the unit of a
    units-per-second column; ``fields``: a template of task fields shown after the count; ``eta``: the
    time remaining at the end. Lines printed to stdout while it runs go above it when stdout is the
    terminal too; redirected, they stay on stdout."""
    columns: list[ProgressColumn] = [TextColumn(label), BarColumn(), MofNCompleteColumn()]
    if rate is not None:
        columns.append(_Rate(rate))
    if fields is not None:
        columns.append(TextColumn(fields))
    columns.append(TimeElapsedColumn())
    if eta:
        columns += [TextColumn("ETA"), TimeRemainingColumn()]
    return Progress(
        *columns, console=Console(stderr=True), disable=not show, redirect_stdout=show and sys.stdout.isatty()
    )

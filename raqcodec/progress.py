"""The one progress bar: batch runs (files), ``raqcodec rd`` (images x settings) and training (steps).

A rich bar on stderr (stdout carries data and ``--json`` records), shown only when asked for (the callers
pass whether stderr is a terminal and the user did not say ``-q``): label, bar, done/total, optionally a
rate in units per second and a line of fields, elapsed time, optionally the time remaining. Under it,
optionally, ``FileStages``: a line for each file whose encode has run for more than SHOW_AFTER_S, naming
the stage it is in.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from rich.console import Console, Group, RenderableType
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


SHOW_AFTER_S = 2.0  # a file's stage line appears once its encode has run this long

# An encode's stages (``codec.encode_detailed``'s ``progress`` names) in a user's words.
STAGE_WORDS = {
    "model": "loading the model",
    "read": "reading the image",
    "analysis": "analysing the image",
    "rate control": "searching codebook sizes",
    "refinement search": "refining indices",
    "rate-constrained choice": "rate-constrained choice",
    "residual stage": "residual stage",
    "quality check": "checking quality",
    "quantization": "quantizing",
    "refinement": "refining indices",
    "entropy coding": "entropy coding",
    "container": "writing the file",
}


class FileStages:
    """Live lines, one per file in work for at least ``after`` seconds (since its first stage): its
    label, the stage it is in (``STAGE_WORDS``) and those seconds. ``stage`` and ``finish`` come from
    one thread; the bar's refresh thread only reads. ``clock``: seconds, injectable for tests."""

    def __init__(self, after: float = SHOW_AFTER_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.after = after
        self.clock = clock
        self._files: dict[Hashable, tuple[str, str, float]] = {}  # key -> (label, stage, started)

    def stage(self, key: Hashable, label: str, name: str) -> None:
        """The file ``key`` (shown as ``label``) starts stage ``name``; its first stage starts its clock."""
        started = self._files[key][2] if key in self._files else self.clock()
        self._files[key] = (label, name, started)

    def finish(self, key: Hashable) -> None:
        """The file ``key`` is done (or failed, or skipped): its line goes at the next refresh."""
        self._files.pop(key, None)

    def lines(self) -> list[str]:
        now = self.clock()
        return [
            f"{label}: {STAGE_WORDS.get(name, name)}, {now - started:.0f} s"
            for label, name, started in list(self._files.values())
            if now - started >= self.after
        ]

    def __rich__(self) -> RenderableType:
        return Group(*(Text(line, no_wrap=True, overflow="ellipsis") for line in self.lines()))


class _Bar(Progress):
    """A Progress with lines of its own under the bar (``FileStages``)."""

    def __init__(self, *columns: ProgressColumn, below: FileStages | None = None, **options: Any) -> None:
        self.below = below
        super().__init__(*columns, **options)

    def get_renderables(self) -> Iterable[RenderableType]:
        yield from super().get_renderables()
        if self.below is not None:
            yield self.below


def progress_bar(
    show: bool,
    *,
    label: str = "{task.description}",
    rate: str | None = None,
    fields: str | None = None,
    eta: bool = False,
    below: FileStages | None = None,
) -> Progress:
    """A bar (disabled unless ``show``). ``label``: the first column's template; ``rate``: the unit of a
    units-per-second column; ``fields``: a template of task fields shown after the count; ``eta``: the
    time remaining at the end; ``below``: file stage lines shown under it (with no task, alone). Lines
    printed to stdout while it runs go above it when stdout is the terminal too; redirected, they stay on
    stdout."""
    columns: list[ProgressColumn] = [TextColumn(label), BarColumn(), MofNCompleteColumn()]
    if rate is not None:
        columns.append(_Rate(rate))
    if fields is not None:
        columns.append(TextColumn(fields))
    columns.append(TimeElapsedColumn())
    if eta:
        columns += [TextColumn("ETA"), TimeRemainingColumn()]
    return _Bar(
        *columns,
        below=below,
        console=Console(stderr=True, soft_wrap=True),  # lines printed above it wrap as the terminal does
        disable=not show,
        redirect_stdout=show and sys.stdout.isatty(),
    )

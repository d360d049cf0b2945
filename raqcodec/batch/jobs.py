"""What a batch run is made of: its kinds, jobs, plan, settings, outcomes and summary."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import formats

ENCODE, DECODE = "encode", "decode"
SUFFIX = {ENCODE: formats.RAQ_EXTENSION, DECODE: formats.DEFAULT_OUTPUT}
DONE, SKIPPED, FAILED = "done", "skipped", "failed"
FOUND_BY_EXTENSION = {ENCODE: formats.READABLE_EXTENSIONS, DECODE: frozenset({formats.RAQ_EXTENSION})}
STDIO = "-"  # as an input: stdin; as -o: stdout
# A temporary file of a dead process is removed only once it has not been written for this long: a pid
# is only meaningful on this host, and shards on other hosts (or containers) may share the output tree.
STALE_AFTER_S = 60.0
GLOB_MAGIC = re.compile(r"[*?[]")


@dataclass(frozen=True)
class Job:
    source: Path
    output: Path
    key: str  # the input's path relative to its root, posix, NFC: the shard hash key
    root: Path | None  # the output directory (-o DIR) the output must stay inside; None: beside the input
    named: bool = False  # the output was named with -o FILE (so --force may replace anything there)
    stdin: bool = False  # the input is standard input (``-``)
    stdout: bool = False  # the output is standard output (``-o -``)

    @property
    def shown_source(self) -> str:
        return "<stdin>" if self.stdin else str(self.source)

    @property
    def shown_output(self) -> str:
        return "<stdout>" if self.stdout else str(self.output)


@dataclass
class Plan:
    jobs: list[Job]
    notes: list[str] = field(default_factory=list)  # symbolic links not followed, empty directories
    errors: list[str] = field(default_factory=list)  # unreadable directories: count as failures
    is_batch: bool = False  # several files, a directory or a pattern: resumable, worth a closing summary


@dataclass(frozen=True)
class Settings:
    """What every job of a run shares; sent once to each worker process."""

    kind: str
    model: str | None = None
    device: str = "auto"
    bpp: float | None = None
    codebook_size: int | None = None
    adapter: str = "seq2seq"
    refine: int | None = None  # None: the effort level's
    effort: int | None = None  # None: the codec's default level
    psnr: float | None = None  # a quality target instead of bpp / codebook_size
    layers: tuple[float, ...] = ()  # smaller budgets the files can be trimmed to (with bpp)
    entropy: str = "auto"
    quality: int = formats.DEFAULT_JPEG_QUALITY  # decode to .jpg/.jpeg


@dataclass
class Outcome:
    job: Job
    status: str  # DONE, SKIPPED or FAILED
    fields: dict[str, Any] = field(default_factory=dict)  # measurements of a done job
    error: str | None = None  # why it failed, one line
    reason: str | None = None  # why it was skipped
    notes: list[str] = field(default_factory=list)
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass
class Summary:
    kind: str
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_in: int = 0  # of the files done
    bytes_out: int = 0
    bpp: list[float] = field(default_factory=list)  # of the files encoded
    seconds: float = 0.0
    interrupted: int | None = None  # the signal that stopped the run

    def add(self, outcome: Outcome) -> None:
        if outcome.status == DONE:
            self.done += 1
            self.bytes_in += outcome.bytes_in
            self.bytes_out += outcome.bytes_out
            if "bpp" in outcome.fields:
                self.bpp.append(outcome.fields["bpp"])
        elif outcome.status == SKIPPED:
            self.skipped += 1
        else:
            self.failed += 1

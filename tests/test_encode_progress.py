"""Per-file progress of an encode (issue 21 item 3): ``encode_detailed(progress=...)`` announces each stage as
it starts; the command line shows, on a terminal only, a line per file in work for over
``progress.SHOW_AFTER_S`` naming its stage (``progress.FileStages``), forwarded from worker processes too
(``pool.emit``), and nothing when stderr is not a terminal or with -q/--json."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import smooth_image
from PIL import Image
from rich.console import Console

from raqcodec import codec, progress
from raqcodec.batch.jobs import ENCODE, Job, Settings
from raqcodec.batch.run import run
from raqcodec.cli import coding, main


@pytest.fixture
def env(tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAQCODEC_MODEL_PATH", str(tiny_model_path.parent))


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(smooth_image(30, 42)).save(path)
    return path


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every (label, stage) the command line's FileStages is given."""
    calls: list[tuple[str, str]] = []
    original = progress.FileStages.stage

    def spy(self: progress.FileStages, key: object, label: str, name: str) -> None:
        calls.append((label, name))
        original(self, key, label, name)

    monkeypatch.setattr(progress.FileStages, "stage", spy)
    return calls


def cli(*args: str) -> CliRunner.Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# -- the API ---------------------------------------------------------------------------------------------------


def test_progress_names_each_stage_of_a_budget_encode_as_it_starts(tiny_model_path: Path) -> None:
    events: list[str] = []
    result = codec.encode_detailed(
        smooth_image(30, 42), bpp=0.5, effort=2, model=tiny_model_path, progress=events.append
    )
    assert events == list(result.stages)  # every stage that ran, in order, each once
    assert events == [
        "model",
        "read",
        "analysis",
        "rate control",
        "refinement search",
        "rate-constrained choice",
        "container",
    ]
    # the largest codebook fits 1 bpp, so the search skips the rate-constrained choice it was expected to make:
    # announced, never timed; every stage that ran is still announced, in order, before it runs
    events.clear()
    result = codec.encode_detailed(
        smooth_image(30, 42), bpp=1.0, effort=2, model=tiny_model_path, progress=events.append
    )
    assert "rate-constrained choice" not in result.stages
    assert [name for name in events if name in result.stages] == list(result.stages)
    assert events[-1] == "container"


def test_progress_at_an_explicit_size_and_under_a_psnr_target(tiny_model_path: Path) -> None:
    events: list[str] = []
    for refine, searched in ((None, "refinement"), (0, "quantization")):
        events.clear()
        result = codec.encode_detailed(
            smooth_image(30, 42), codebook_size=16, refine=refine, model=tiny_model_path, progress=events.append
        )
        assert events == list(result.stages) == ["model", "read", "analysis", searched, "entropy coding", "container"]

    events.clear()  # the first try reaches the target (the tiny model reaches about 10.7 dB)
    result = codec.encode_detailed(
        smooth_image(30, 42), psnr=10.5, effort=0, model=tiny_model_path, progress=events.append
    )
    assert events == list(result.stages) == ["model", "read", "analysis", "rate control", "quality check", "container"]


# -- the display logic -----------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_file_line_shows_only_after_the_delay_and_goes_when_the_file_is_done() -> None:
    clock = Clock()
    files = progress.FileStages(after=2.0, clock=clock)
    files.stage("a", "photo.png", "model")
    clock.now += 0.5
    files.stage("a", "photo.png", "rate control")
    clock.now += 1.4
    assert files.lines() == []  # 1.9 s: nothing yet
    clock.now += 0.1
    assert files.lines() == ["photo.png: searching codebook sizes, 2 s"]  # timed from its first stage
    files.stage("b", "other.png", "model")
    clock.now += 8.0
    files.stage("a", "photo.png", "quality check")
    assert files.lines() == ["photo.png: checking quality, 10 s", "other.png: loading the model, 8 s"]
    files.finish("a")
    files.finish("never started")  # a skipped file: nothing to remove
    assert files.lines() == ["other.png: loading the model, 8 s"]


def test_the_lines_render_under_the_files_bar() -> None:
    clock = Clock()
    files = progress.FileStages(after=2.0, clock=clock)
    bar = progress.progress_bar(True, rate="files", below=files)
    bar.add_task("encode", total=3)
    files.stage("a", "photo.png", "residual stage")
    out = io.StringIO()
    console = Console(file=out, width=100)
    console.print(bar.get_renderable())
    assert "0/3" in out.getvalue() and "photo.png" not in out.getvalue()
    clock.now += 3.0
    console.print(bar.get_renderable())
    last = out.getvalue().splitlines()[-2:]
    assert "0/3" in last[0] and last[1] == "photo.png: residual stage, 3 s"


def test_notes_and_errors_print_above_a_live_display_not_into_it() -> None:
    """While the display is live, sys.stderr is rich's proxy: lines must go through it (it clears the
    display, prints them, draws it again below); click's err=True stream wrote past it, into the display."""
    from raqcodec.cli.app import _note, _say_error

    out = io.StringIO()
    bar = progress.progress_bar(True, below=progress.FileStages())
    bar.live.console = Console(file=out, force_terminal=True, width=100)
    with bar:
        _note("a note")
        _say_error("an error")
    assert "raqcodec: note: a note" in out.getvalue() and "raqcodec: error: an error" in out.getvalue()


# -- the command line ------------------------------------------------------------------------------------------


def test_nothing_is_shown_when_stderr_is_not_a_terminal(env: None, png: Path, seen: list) -> None:
    res = cli("encode", str(png), "--model", "tiny", "--bpp", "0.5", "--effort", "0")
    assert res.exit_code == 0, res.output
    assert seen == []  # no stage reached a display
    assert res.stderr == "" and len(res.stdout.splitlines()) == 1 and " -> " in res.stdout  # the result line only


@pytest.mark.parametrize("flag", ["-q", "--json"])
def test_nothing_is_shown_with_quiet_or_json_even_on_a_terminal(
    env: None, png: Path, seen: list, monkeypatch: pytest.MonkeyPatch, flag: str
) -> None:
    monkeypatch.setattr(coding, "_stderr_is_terminal", lambda: True)
    res = cli("encode", str(png), "--model", "tiny", "--bpp", "0.5", "--effort", "0", flag)
    assert res.exit_code == 0, res.output
    assert seen == [] and res.stderr == ""


def test_on_a_terminal_the_stages_of_an_in_process_encode_reach_the_display(
    env: None, png: Path, seen: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coding, "_stderr_is_terminal", lambda: True)
    res = cli(
        "encode", str(png), "--model", "tiny", "--bpp", "0.5", "--effort", "0", "-o", str(png.with_suffix(".raq")), "-f"
    )
    assert res.exit_code == 0, res.output
    assert [label for label, _ in seen] == [str(png)] * len(seen)
    assert [name for _, name in seen][:4] == ["model", "read", "analysis", "rate control"]


def test_stages_are_forwarded_from_worker_processes(tiny_model_path: Path, tmp_path: Path) -> None:
    jobs = []
    for i in range(2):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(smooth_image(24, 32, seed=i)).save(path)
        jobs.append(Job(source=path, output=path.with_suffix(".raq"), key=path.name, root=None))
    order: list[tuple[str, Path]] = []
    summary = run(
        jobs,
        Settings(kind=ENCODE, model=str(tiny_model_path), device="cpu", bpp=1.0, effort=0),
        workers=2,
        report=lambda outcome: order.append(("done", outcome.job.source)),
        stage=lambda job, name: order.append((name, job.source)),
    )
    assert summary.done == 2
    for job in jobs:
        names = [name for name, source in order if source == job.source]
        assert names[:4] == ["model", "read", "analysis", "rate control"] and names[-2:] == ["container", "done"]

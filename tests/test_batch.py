"""Batch runs of encode/decode (raqcodec.batch): directory trees and patterns, mirrored outputs, failures
listed, resume by skipping complete outputs, shards, interruption leaving nothing partial, and outputs
that cannot leave the output directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest
import torch
from click.testing import CliRunner
from conftest import smooth_image
from PIL import Image

from raqcodec.batch import jobs as batch_jobs
from raqcodec.batch import outputs as batch_outputs
from raqcodec.batch import plan
from raqcodec.cli import main
from raqcodec.io.bitstream import read_header

UNICODE = "x y/fötö ü 写真.png"  # spaces, accents and CJK, in a folder with a space


@pytest.fixture
def env(tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("RAQCODEC_MODEL_PATH", str(tiny_model_path.parent))
    return {**os.environ, "RAQCODEC_MODEL_PATH": str(tiny_model_path.parent)}


@pytest.fixture
def one_thread() -> Iterator[None]:
    """In-process runs (-j 1) as fast as a worker's: one torch thread (two contend on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_tree(root: Path, count: int, corrupt: bool = True, size: tuple[int, int] = (32, 48)) -> list[str]:
    """``count`` images in nested folders (one with a unicode name), plus two corrupt .png files and
    files a batch must leave alone; returns the good images' paths relative to root."""
    names = [f"d{i % 3}/s{i % 2}/img{i:02d}.png" for i in range(count - 1)] + [UNICODE]
    for i, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth_image(*size, seed=i)).save(path)
    if corrupt:
        good = (root / names[0]).read_bytes()
        (root / "d1" / "truncated.png").write_bytes(good[: len(good) // 2])
        (root / "d2" / "s0" / "text.png").write_text("I am text with a .png name")
    (root / ".hidden.png").write_bytes((root / names[0]).read_bytes())
    (root / "d0" / "notes.txt").write_text("not an image")
    return names


def outputs(root: Path, suffix: str = ".raq") -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.suffix == suffix
    }


def leftovers(root: Path) -> list[Path]:
    """Temporary or hidden files anywhere in an output tree: there must never be any."""
    return [p for p in root.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


def with_suffix(names: list[str], suffix: str) -> set[str]:
    return {str(Path(n).with_suffix(suffix).as_posix()) for n in names}


def cli(*args: str) -> CliRunner.Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def raqcodec(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "raqcodec", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def identities(folder: Path) -> dict[Path, tuple[int, int]]:
    """Inode and modification time of every file: outputs are replaced by rename, so a rewrite changes both."""
    return {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in folder.rglob("*") if path.is_file()}


def workers_of(pid: int) -> list[int]:
    """Worker processes (multiprocessing spawn children) of ``pid``, from Linux's /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in command:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_tree_with_failures_then_resume_then_shards(env: dict, tmp_path: Path, one_thread: None) -> None:
    names = make_tree(tmp_path / "tree", 38)
    first = raqcodec("encode", "tree/", "-o", "out/", "-k", "16", "--model", "tiny", "-j", "2", env=env, cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    assert outputs(tmp_path / "out") == with_suffix(names, ".raq")  # 38, mirrored, unicode name included
    assert not leftovers(tmp_path / "out")
    errors = [line for line in first.stderr.splitlines() if line.startswith("raqcodec: error: ")]
    assert len(errors) == 2 and "Traceback" not in first.stderr
    assert any(e.startswith("raqcodec: error: tree/d1/truncated.png") for e in errors)
    assert any(e.startswith("raqcodec: error: tree/d2/s0/text.png") for e in errors)
    assert "38 done, 0 skipped, 2 failed of 40 files" in first.stderr and "bpp" in first.stderr
    assert len(first.stdout.splitlines()) == 38  # today's per-file lines
    for path in (tmp_path / "out").rglob("*.raq"):
        read_header(path.read_bytes())

    before = identities(tmp_path / "out")
    again = raqcodec(
        "encode", "tree/", "-o", "out/", "-k", "16", "--model", "tiny", "-j", "2", "--json", env=env, cwd=tmp_path
    )
    assert again.returncode == 1
    statuses = {r["input"]: r["status"] for r in records(again.stdout)}
    assert sorted(statuses.values()).count("skipped") == 38 and sorted(statuses.values()).count("failed") == 2
    assert statuses["tree/" + UNICODE] == "skipped"
    assert "0 done, 38 skipped, 2 failed of 40 files" in again.stderr
    assert identities(tmp_path / "out") == before  # skipped means untouched, not encoded again

    seen: dict[str, str] = {}
    for shard in ("1/2", "2/2"):
        res = cli(
            "encode",
            str(tmp_path / "tree"),
            "-o",
            str(tmp_path / "sharded"),
            "-k",
            "16",
            "--model",
            "tiny",
            "--shard",
            shard,
            "--json",
        )
        assert res.exit_code in (0, 1), res.output
        for record in records(res.stdout):
            assert record["input"] not in seen  # disjoint
            seen[record["input"]] = record["status"]
    assert len(seen) == 40  # together: every input exactly once
    assert outputs(tmp_path / "sharded") == with_suffix(names, ".raq")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_run_leaves_nothing_partial(env: dict, tmp_path: Path, one_thread: None, signum: int) -> None:
    names = make_tree(tmp_path / "tree", 32, corrupt=False)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "raqcodec", "encode", "tree", "-o", "out", "-k", "16", "--model", "tiny", "-j", "2"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out.exists() and any(out.rglob("*.raq"))) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    workers = workers_of(proc.pid)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    done = outputs(out)
    assert 0 < len(done) < len(names)
    assert not leftovers(out)
    for path in out.rglob("*.raq"):
        read_header(path.read_bytes())  # complete, or not there at all
    if sys.platform.startswith("linux"):  # the workers went too
        assert len(workers) == 2 and not [pid for pid in workers if alive(pid)]

    res = cli("encode", str(tmp_path / "tree"), "-o", str(out), "-k", "16", "--model", "tiny", "--json")
    assert res.exit_code == 0, res.output
    statuses = [r["status"] for r in records(res.stdout)]
    assert statuses.count("skipped") == len(done) and statuses.count("done") == len(names) - len(done)
    assert outputs(out) == with_suffix(names, ".raq") and not leftovers(out)


def test_decode_tree_force_and_incomplete_outputs(env: dict, tmp_path: Path, one_thread: None) -> None:
    names = make_tree(tmp_path / "tree", 4, corrupt=False)
    assert (
        cli(
            "encode", str(tmp_path / "tree"), "-o", str(tmp_path / "raq"), "-k", "16", "--model", "tiny", "-q"
        ).exit_code
        == 0
    )
    res = cli("decode", str(tmp_path / "raq"), "-o", str(tmp_path / "png"), "--json")
    assert res.exit_code == 0, res.output
    assert outputs(tmp_path / "png", ".png") == with_suffix(names, ".png")
    assert all(r["status"] == "done" for r in records(res.stdout))
    assert Image.open(tmp_path / "png" / Path(UNICODE).with_suffix(".png")).size == (48, 32)

    cut = tmp_path / "png" / Path(names[0]).with_suffix(".png")
    cut.write_bytes(cut.read_bytes()[:-1])  # loses the last byte of IEND: verify() alone would pass it
    res = cli("decode", str(tmp_path / "raq"), "-o", str(tmp_path / "png"), "--json")
    assert [r["status"] for r in records(res.stdout)].count("done") == 1
    assert f"{cut}: the existing output is incomplete" in res.stderr
    Image.open(cut).load()

    broken = tmp_path / "raq" / Path(names[1]).with_suffix(".raq")
    broken.write_bytes(broken.read_bytes()[:-3])
    (tmp_path / "raq" / Path(names[2]).with_suffix(".raq")).write_text("garbage")
    res = cli("encode", str(tmp_path / "tree"), "-o", str(tmp_path / "raq"), "-k", "16", "--model", "tiny", "--json")
    assert res.exit_code == 1  # the text file at an output path is not raqcodec's: left alone, listed
    assert sorted(r["status"] for r in records(res.stdout)) == ["done", "failed", "skipped", "skipped"]
    assert "truncated .raq file" in res.stderr and "not written by raqcodec" in res.stderr
    assert (tmp_path / "raq" / Path(names[2]).with_suffix(".raq")).read_text() == "garbage"
    (tmp_path / "raq" / Path(names[2]).with_suffix(".raq")).unlink()  # the user moves it away: done next time
    res = cli("encode", str(tmp_path / "tree"), "-o", str(tmp_path / "raq"), "-k", "16", "--model", "tiny", "--json")
    assert res.exit_code == 0
    assert sorted(r["status"] for r in records(res.stdout)) == ["done", "skipped", "skipped", "skipped"]
    for path in (tmp_path / "raq").rglob("*.raq"):
        read_header(path.read_bytes())

    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "png").rglob("*.png")}
    time.sleep(0.01)
    res = cli("decode", str(tmp_path / "raq"), "-o", str(tmp_path / "png"), "--force", "--json")
    assert all(r["status"] == "done" for r in records(res.stdout)) and len(records(res.stdout)) == 4
    assert all(p.stat().st_mtime_ns != t for p, t in before.items())


def test_glob_patterns_and_beside_inputs(
    env: dict, tmp_path: Path, one_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = make_tree(tmp_path / "tree", 5, corrupt=False)
    monkeypatch.chdir(tmp_path)
    res = cli("encode", "tree/**/s1/*.png", "-o", "out", "-k", "16", "--model", "tiny", "-q")  # unexpanded
    assert res.exit_code == 0, res.output
    assert outputs(tmp_path / "out") == {n.replace(".png", ".raq") for n in names if "/s1/" in n}
    res = cli("encode", "tree/nothing*.png", "-k", "16", "--model", "tiny")
    assert res.exit_code == 2 and "no files match" in res.output

    res = cli("encode", "tree", "-k", "16", "--model", "tiny", "-q")  # without -o: beside the inputs
    assert res.exit_code == 0
    assert outputs(tmp_path / "tree") == with_suffix(names, ".raq")
    assert not (tmp_path / "tree" / ".hidden.raq").exists() and not (tmp_path / "tree" / "d0" / "notes.raq").exists()


def test_outputs_never_leave_the_output_directory(
    env: dict, tmp_path: Path, one_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(tmp_path / "tree", 4, corrupt=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "d0").symlink_to(outside, target_is_directory=True)  # a link in the output tree
    (tmp_path / "tree" / "linked").symlink_to(outside, target_is_directory=True)  # and in the input tree
    Image.fromarray(smooth_image(32, 48)).save(outside / "elsewhere.png")
    (tmp_path / "tree" / "alias.png").symlink_to(tmp_path / "tree" / "d1" / "s1" / "img01.png")

    res = cli("encode", str(tmp_path / "tree"), "-o", str(tmp_path / "out"), "-k", "16", "--model", "tiny", "--json")
    assert res.exit_code == 1
    failed = [r for r in records(res.stdout) if r["status"] == "failed"]
    assert [Path(r["input"]).relative_to(tmp_path / "tree").as_posix() for r in failed] == ["d0/s0/img00.png"]
    assert "would be written outside" in failed[0]["error"]
    assert sorted(p.name for p in outside.iterdir()) == ["elsewhere.png"]  # nothing written there
    assert "symbolic link to a directory, not followed" in res.stderr  # tree/linked: not encoded
    assert not (tmp_path / "out" / "linked").exists()
    assert (tmp_path / "out" / "alias.raq").is_file()  # a linked file is read; its output is mirrored

    monkeypatch.chdir(tmp_path)
    res = cli("encode", "tree/*/../*.png", "-o", "out2", "-k", "16", "--model", "tiny")
    assert res.exit_code == 2 and "'..'" in res.output and not (tmp_path / "out2").exists()


def test_usage_errors(env: dict, tmp_path: Path) -> None:
    Image.fromarray(smooth_image(32, 48)).save(tmp_path / "a.png")
    Image.fromarray(smooth_image(32, 48)).save(tmp_path / "a.jpg")
    res = cli("encode", str(tmp_path), "-o", str(tmp_path / "out"), "-k", "16", "--model", "tiny")
    assert res.exit_code == 2 and "would both be written to" in res.output
    assert not (tmp_path / "out").exists()
    for bad in ("0/2", "3/2", "1/0", "x", "1/2/3"):
        res = cli("encode", str(tmp_path / "a.png"), "-k", "16", "--shard", bad)
        assert res.exit_code == 2 and "--shard" in res.output, bad
        assert len(res.output.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    res = cli("decode", str(tmp_path / "empty"))
    assert res.exit_code == 2 and "no input files (.raq)" in res.output


def test_shards_are_stable_and_independent_of_the_other_files() -> None:
    keys = [f"a/b{i}/photo {i}.png" for i in range(200)] + ["fötö ü 写真.png"]
    jobs = [batch_jobs.Job(Path(k), Path(k + ".raq"), k, None) for k in keys]
    parts = [plan.select_shard(jobs, i, 3) for i in (1, 2, 3)]
    assert sorted(j.key for part in parts for j in part) == sorted(keys)  # a partition
    assert all(40 < len(part) < 95 for part in parts)
    assert plan.select_shard(jobs[::7], 2, 3) == [j for j in parts[1] if j in jobs[::7]]  # no ordering or set effect
    assert plan.shard_of("a/b.png", 4) == 3  # sha256 of the relative path: the same on every machine
    nfd, nfc = "fo\u0308to\u0308.png", "f\u00f6t\u00f6.png"  # macOS spells names NFD
    assert plan.plan_key(PurePosixPath(nfd)) == plan.plan_key(PurePosixPath(nfc)) == nfc


def test_stale_temporary_files_are_swept(env: dict, tmp_path: Path) -> None:
    Image.fromarray(smooth_image(32, 48)).save(tmp_path / "a.png")
    out = tmp_path / "out" / "deep"
    out.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old = time.time() - 2 * batch_jobs.STALE_AFTER_S
    files = {
        "stale": out / f".x.raq.{dead.pid}.0badcafe.tmp",
        "fresh": out / f".y.raq.{dead.pid}.0badcafe.tmp",
        "alive": out / f".z.raq.{os.getpid()}.0badcafe.tmp",
        "other": out / f".w.txt.{dead.pid}.0badcafe.tmp",
    }
    for name, path in files.items():
        path.write_bytes(b"partial")
        if name != "fresh":
            os.utime(path, (old, old))
    removed = batch_outputs.sweep_stale_temps(
        [batch_jobs.Job(tmp_path / "a.png", tmp_path / "out" / "a.raq", "a.png", tmp_path / "out")], ".raq"
    )
    assert removed == [files["stale"]]
    assert all(path.exists() for name, path in files.items() if name != "stale")

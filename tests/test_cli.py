"""The command line: default names, --json records, overwrite policy, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import smooth_image
from PIL import Image

import raqcodec
from raqcodec.cli import main
from raqcodec.io import bitstream


@pytest.fixture
def env(tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Make the tiny model installed (found by name and by fingerprint)."""
    monkeypatch.setenv("RAQCODEC_MODEL_PATH", str(tiny_model_path.parent))
    return {"RAQCODEC_MODEL_PATH": str(tiny_model_path.parent)}


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(smooth_image(30, 42)).save(path)
    return path


def run(*args: str) -> CliRunner.Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_encode_decode_default_names_and_json(env: dict, png: Path) -> None:
    res = run("encode", str(png), "--model", "tiny", "-k", "16", "--json")
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    raq = png.with_suffix(".raq")
    assert record["output"] == str(raq) and raq.exists() and record["status"] == "done"
    assert record["bytes"] == raq.stat().st_size
    assert record["bpp"] == pytest.approx(raq.stat().st_size * 8 / (42 * 30), abs=1e-5)
    assert {"input", "width", "height", "codebook_size", "seconds"} <= set(record)
    assert (record["width"], record["height"], record["codebook_size"]) == (42, 30, 16)

    png.unlink()
    res = run("decode", str(raq), "--json")
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    assert record["output"] == str(png) and png.exists()
    assert (record["width"], record["height"]) == (42, 30) and "seconds" in record
    assert Image.open(png).size == (42, 30)


def test_bpp_budget_through_cli(env: dict, png: Path) -> None:
    res = run("encode", str(png), "--model", "tiny", "--bpp", "2.0", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["bpp"] <= 2.0


def test_complete_outputs_are_skipped_in_batches_unless_force(env: dict, png: Path, tmp_path: Path) -> None:
    """Resume-skipping is for batch runs; one named file is redone (tests/test_cli_outputs.py)."""
    second = tmp_path / "second.png"
    Image.fromarray(smooth_image(12, 12)).save(second)
    out = tmp_path / "out"
    assert run("encode", str(png), str(second), "-o", str(out), "--model", "tiny", "-k", "8").exit_code == 0
    raq = out / "photo.raq"
    before = raq.read_bytes()
    res = run("encode", str(png), str(second), "-o", str(out), "--model", "tiny", "-k", "16")
    assert res.exit_code == 0 and "skipped" in res.stdout and "--force" in res.stdout  # reported, never silent
    assert raq.read_bytes() == before  # untouched
    res = run("encode", str(png), str(second), "-o", str(out), "--model", "tiny", "-k", "16", "--json")
    assert [json.loads(line)["status"] for line in res.stdout.splitlines()] == ["skipped", "skipped"]
    assert run("encode", str(png), str(second), "-o", str(out), "--model", "tiny", "-k", "16", "--force").exit_code == 0
    assert raq.read_bytes() != before
    single = run("encode", str(png), "--model", "tiny", "-k", "8")
    assert single.exit_code == 0 and "skipped" not in single.stdout


def test_output_option_file_and_directory(env: dict, png: Path, tmp_path: Path) -> None:
    second = tmp_path / "second.png"
    Image.fromarray(smooth_image(12, 12)).save(second)
    out_dir = tmp_path / "out"
    res = run("encode", str(png), str(second), "-o", str(out_dir), "--model", "tiny", "-k", "8")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out_dir.iterdir()) == ["photo.raq", "second.raq"]
    res = run("decode", str(out_dir / "photo.raq"), "-o", str(tmp_path / "back.png"))
    assert res.exit_code == 0 and (tmp_path / "back.png").exists()


def test_info_json(env: dict, png: Path) -> None:
    run("encode", str(png), "--model", "tiny", "-k", "12")
    res = run("info", str(png.with_suffix(".raq")), "--json", "--grid")
    assert res.exit_code == 0
    info = json.loads(res.stdout)
    assert info["codebook_size"] == 12 and info["width"] == 42 and info["height"] == 30
    assert info["bytes"] == png.with_suffix(".raq").stat().st_size and info["bpp"] > 0
    assert {"version", "model_fingerprint", "adapter", "mode", "bit_depth"} <= set(info)
    assert info["version"] == 2 and info["coder"] == "context"
    stream = bitstream.unpack(png.with_suffix(".raq").read_bytes())
    assert info["payload_bits"] == 8 * len(stream.indices_section)
    grid = raqcodec.inspect(png.with_suffix(".raq").read_bytes())["indices"]
    counts = np.bincount(grid.ravel()).astype(float)
    p = counts[counts > 0] / counts.sum()
    assert info["order0_entropy_bits"] == pytest.approx(-(p * np.log2(p)).sum() * grid.size, abs=0.05)


def test_info_without_the_model_still_shows_the_header(env: dict, png: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run("encode", str(png), "--model", "tiny", "-k", "12")
    monkeypatch.setenv("RAQCODEC_MODEL_PATH", "")
    res = run("info", str(png.with_suffix(".raq")), "--json", "--grid")
    assert res.exit_code == 0
    info = json.loads(res.stdout)
    assert info["codebook_size"] == 12 and info["payload_bits"] > 0 and info["order0_entropy_bits"] is None
    assert "index grid not decoded" in res.stderr


def test_models_lists_installed(env: dict) -> None:
    res = run("models", "--json")
    assert res.exit_code == 0
    names = [json.loads(line)["name"] for line in res.stdout.splitlines()]
    assert "tiny" in names


def test_models_says_a_residual_stage_has_no_upper_rate() -> None:
    """raq-photo2's card once gave its sweep's ends (0.0485..0.999) as its reach; the base stage reaches
    0.029 bpp at K~ = 2 and the residual stage goes on to lossless."""
    res = run("models", "--json")
    cards = {c["name"]: c for c in map(json.loads, res.stdout.splitlines())}
    assert cards["raq-photo2"]["bpp_range_kodak"] == [0.0292, None]
    assert cards["raq-photo"]["bpp_range_kodak"][1] < 0.4  # the base stage alone stops near 0.39 bpp
    table = CliRunner().invoke(main, ["models"], env={"COLUMNS": "200"}).stdout  # one line per model
    assert any("raq-photo2" in line and "0.029..(no limit)" in line for line in table.splitlines())


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["encode", "{png}", "--model", "tiny"], 2, "exactly one of --bpp, --codebook-size and --psnr"),
        (["encode", "{png}", "--model", "tiny", "--bpp", "0.3", "-k", "8"], 2, "exactly one"),
        (["encode", "{missing}", "--bpp", "1"], 2, "does not exist"),
        (["encode", "{text}", "--model", "tiny", "--bpp", "1"], 1, "not an image"),
        (["encode", "{png}", "--model", "nosuchmodel", "--bpp", "1"], 2, "unknown model 'nosuchmodel'"),
        (["encode", "{png}", "--model", "tiny", "--bpp", "0.001"], 1, "can reach for this image"),
        (["encode", "{png}", "--model", "tiny", "-k", "100000"], 2, "outside model tiny's codebook sizes 2..64"),
        (["decode", "{textraq}"], 1, "not a .raq file"),
        (["info", "{textraq}"], 1, "not a .raq file"),
    ],
)
def test_bad_input_exit_codes(env: dict, png: Path, tmp_path: Path, args: list[str], code: int, message: str) -> None:
    text = tmp_path / "notes.png"
    text.write_text("hello")
    textraq = tmp_path / "garbage.raq"
    textraq.write_text("hello, I am not a stream")
    paths = {"png": str(png), "missing": str(tmp_path / "missing.png"), "text": str(text), "textraq": str(textraq)}
    res = CliRunner().invoke(main, [a.format(**paths) for a in args])
    assert res.exit_code == code, res.output
    assert message in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_errors_are_one_line_without_traceback(env: dict, png: Path, tmp_path: Path) -> None:
    """Through a real process: stderr carries exactly one line and no traceback; no partial output."""
    run("encode", str(png), "--model", "tiny", "-k", "16")
    raq = png.with_suffix(".raq")
    data = bytearray(raq.read_bytes())
    corrupt = tmp_path / "corrupt.raq"
    corrupt.write_bytes(bytes(data[: len(data) // 2]))
    proc = subprocess.run(
        [sys.executable, "-m", "raqcodec", "decode", str(corrupt)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "truncated" in lines[0] and "Traceback" not in proc.stderr
    assert not corrupt.with_suffix(".png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    missing = subprocess.run(
        [sys.executable, "-m", "raqcodec", "encode", "--bpp", "0.3", str(tmp_path / "no.png")],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"raqcodec: error: Invalid value for 'INPUTS...': Path '{tmp_path / 'no.png'}' does not exist. (see --help)"
    ]


def test_one_bad_file_does_not_stop_the_others(env: dict, png: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    res = CliRunner().invoke(
        main, ["encode", str(bad), str(png), "--model", "tiny", "-k", "8", "-o", str(tmp_path / "out")]
    )
    assert res.exit_code == 1
    assert (tmp_path / "out" / "photo.raq").exists() and not (tmp_path / "out" / "bad.raq").exists()


def test_compare_reports_psnr(env: dict, png: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.png"
    arr = np.asarray(Image.open(png)).astype(np.int16)
    Image.fromarray(np.clip(arr + 2, 0, 255).astype(np.uint8)).save(other)
    res = run("compare", str(png), str(other), "--json")
    assert res.exit_code == 0
    assert 40 < json.loads(res.stdout)["psnr"] < 43  # +2 everywhere (minus clipping): ~42.1 dB


def test_output_directory_with_trailing_slash(env: dict, png: Path, tmp_path: Path) -> None:
    res = run("encode", str(png), "--model", "tiny", "-k", "8", "-o", str(tmp_path / "newdir") + "/")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "newdir" / "photo.raq").is_file()


def test_compare_identical_images_is_valid_json(env: dict, png: Path) -> None:
    res = run("compare", str(png), str(png), "--json")
    record = json.loads(res.stdout)
    assert record["identical"] is True and record["psnr"] is None


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["export", "{empty}", "--name", "x", "--data", "{empty}", "-o", "{out}"], 1, "no checkpoint in"),
        (
            ["train", "--data", "{empty}", "-o", "{out}", "--set", "train.steps=abc"],
            2,
            "train.steps must be of type int",
        ),
    ],
)
def test_training_commands_fail_in_one_line(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    (tmp_path / "empty").mkdir()
    paths = {"empty": str(tmp_path / "empty"), "out": str(tmp_path / "out")}
    res = CliRunner().invoke(main, [a.format(**paths) for a in args])
    assert res.exit_code == code, res.output
    assert message in res.output and len(res.output.strip().splitlines()) == 1

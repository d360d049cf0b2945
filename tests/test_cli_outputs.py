"""What `raqcodec encode` / `decode` may do to files that already exist, and what they write, through real
CLI processes (issue 18): originals are never replaced, files raqcodec did not write need --force, the
output format follows the extension, modes follow the umask, `-` is stdin/stdout, several inputs need a
directory, an unwritable output directory fails before any work."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest
from cliutil import error_lines, magic_of, pixels, raqcodec, tiny_env, write_photo

import raqcodec as raqcodec_api
from raqcodec.io.bitstream import read_header


@pytest.fixture
def env(tiny_model_path: Path) -> dict[str, str]:
    return tiny_env(tiny_model_path)


def encode_tiny(env: dict[str, str], cwd: Path, *args: str) -> None:
    proc = raqcodec("encode", *args, "-k", "16", "--model", "tiny", env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stderr


def tiny(env: dict[str, str]) -> Path:
    return Path(env["RAQCODEC_MODEL_PATH"]) / "tiny.safetensors"


def encode_here(env: dict[str, str], image: Path, output: Path, size: int = 16) -> None:
    """Set-up through the API, in this process (each CLI process spends a second or two importing torch)."""
    output.write_bytes(raqcodec_api.encode(image, codebook_size=size, model=tiny(env)))


def imported_torch(stderr: str) -> bool:
    """Whether a process run with ``python -X importtime`` imported torch."""
    return any(
        line.startswith("import time:") and line.rsplit("|", 1)[-1].strip() == "torch" for line in stderr.splitlines()
    )


def test_readme_workflow_never_replaces_the_original(env: dict[str, str], tmp_path: Path) -> None:
    """`encode photo.png; decode photo.raq` (and `--force`, and whole trees) leave the original alone."""
    photo = write_photo(tmp_path / "photo.png")
    original = photo.read_bytes()
    encode_tiny(env, tmp_path, "photo.png")
    for extra in ((), ("--force",), ("-f",)):
        dec = raqcodec("decode", *extra, "photo.raq", env=env, cwd=tmp_path)
        assert dec.returncode == 2, dec.stderr
        lines = error_lines(dec.stderr)
        assert len(lines) == 1 and "photo.png" in lines[0] and "not written by raqcodec" in lines[0], lines
        assert "-o" in lines[0]  # the way out
        assert photo.read_bytes() == original
    ok = raqcodec("decode", "photo.raq", "-o", "photo-decoded.png", env=env, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert pixels(tmp_path / "photo-decoded.png").shape == (30, 42, 3)

    tree = tmp_path / "photos"
    originals = {name: write_photo(tree / name, seed=i).read_bytes() for i, name in enumerate(["a.png", "s/b.png"])}
    for name in originals:  # what `raqcodec encode photos` leaves beside them
        encode_here(env, tree / name, (tree / name).with_suffix(".raq"))
    dec = raqcodec("decode", "--force", "photos", env=env, cwd=tmp_path)
    assert dec.returncode == 1
    failures = [line for line in dec.stderr.splitlines() if line.startswith("raqcodec: error:")]
    assert len(failures) == 2 and all("not written by raqcodec" in line for line in failures)
    assert {name: (tree / name).read_bytes() for name in originals} == originals


def test_files_raqcodec_did_not_write_need_force(env: dict[str, str], tmp_path: Path) -> None:
    jpeg = write_photo(tmp_path / "photo.jpg", quality=90)
    original = jpeg.read_bytes()
    encode_here(env, jpeg, tmp_path / "x.raq")

    dec = raqcodec("decode", "x.raq", "-o", "photo.jpg", env=env, cwd=tmp_path)
    assert dec.returncode == 2
    lines = error_lines(dec.stderr)
    assert len(lines) == 1 and "photo.jpg" in lines[0] and "--force" in lines[0], lines
    assert jpeg.read_bytes() == original

    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    enc = raqcodec("encode", "photo.jpg", "-o", "notes.txt", "-k", "16", "--model", "tiny", env=env, cwd=tmp_path)
    assert enc.returncode == 2
    assert len(error_lines(enc.stderr)) == 1 and "notes.txt" in enc.stderr
    assert notes.read_text() == "my notes\n"

    # asked for explicitly: replaced
    enc = raqcodec("encode", "photo.jpg", "-o", "notes.txt", "-k", "16", "--model", "tiny", "-f", env=env, cwd=tmp_path)
    assert enc.returncode == 0, enc.stderr
    assert magic_of(notes) == "RAQ"
    dec = raqcodec("decode", "x.raq", "-o", "photo.jpg", "--force", env=env, cwd=tmp_path)
    assert dec.returncode == 0, dec.stderr
    assert magic_of(jpeg) == "JPEG" and jpeg.read_bytes() != original

    # raqcodec's own outputs, complete or cut short, are redone without --force
    partial = tmp_path / "partial.raq"
    partial.write_bytes((tmp_path / "x.raq").read_bytes()[:30])
    enc = raqcodec("encode", "photo.jpg", "-o", "partial.raq", "-k", "16", "--model", "tiny", env=env, cwd=tmp_path)
    assert enc.returncode == 0, enc.stderr
    assert read_header(partial.read_bytes()).codebook_size == 16  # complete now
    dec = raqcodec("decode", "x.raq", "-o", "photo.jpg", "--quality", "80", env=env, cwd=tmp_path)
    assert dec.returncode == 0, dec.stderr  # photo.jpg is now raqcodec's own decode


def test_decode_writes_the_format_its_extension_names(env: dict[str, str], tmp_path: Path) -> None:
    encode_here(env, write_photo(tmp_path / "photo.png"), tmp_path / "photo.raq")
    encode_here(env, write_photo(tmp_path / "gray.png", mode="L"), tmp_path / "gray.raq")
    reference = np.asarray(raqcodec_api.decode(tmp_path / "photo.raq", model=tiny(env)))
    for name, fmt in [("out.tif", "TIFF"), ("out.webp", "WEBP"), ("out.jpeg", "JPEG"), ("out.ppm", "PPM")]:
        dec = raqcodec("decode", "photo.raq", "-o", name, env=env, cwd=tmp_path)
        assert dec.returncode == 0, dec.stderr
        assert magic_of(tmp_path / name) == fmt, name
        got = pixels(tmp_path / name)
        if fmt == "JPEG":  # quality 95 by default, on the tiny model's noisy pixels
            assert got.shape == reference.shape and np.abs(got.astype(int) - reference).mean() < 25
        else:
            assert np.array_equal(got, reference), name  # lossless, WebP included
    dec = raqcodec("decode", "gray.raq", "-o", "gray.pgm", env=env, cwd=tmp_path)
    assert dec.returncode == 0 and magic_of(tmp_path / "gray.pgm") == "PGM"
    for bad in ("out.xyz", "out.gif", "noextension"):
        dec = raqcodec("decode", "photo.raq", "-o", bad, env=env, cwd=tmp_path)
        assert dec.returncode == 2, bad
        assert len(error_lines(dec.stderr)) == 1 and ".png" in dec.stderr and ".webp" in dec.stderr
        assert not (tmp_path / bad).exists()


def test_outputs_respect_the_umask_and_keep_a_replaced_files_mode(env: dict[str, str], tmp_path: Path) -> None:
    write_photo(tmp_path / "photo.png")
    enc = raqcodec("encode", "photo.png", "-k", "16", "--model", "tiny", env=env, cwd=tmp_path, umask=0o077)
    assert enc.returncode == 0, enc.stderr
    assert stat.S_IMODE((tmp_path / "photo.raq").stat().st_mode) == 0o600
    dec = raqcodec("decode", "photo.raq", "-o", "back.png", env=env, cwd=tmp_path, umask=0o002)
    assert dec.returncode == 0, dec.stderr
    assert stat.S_IMODE((tmp_path / "back.png").stat().st_mode) == 0o664

    private = tmp_path / "private.raq"
    private.write_text("someone's private file")
    private.chmod(0o600)
    enc = raqcodec(
        "encode",
        "photo.png",
        "-o",
        "private.raq",
        "-k",
        "16",
        "--model",
        "tiny",
        "--force",
        env=env,
        cwd=tmp_path,
        umask=0o022,
    )
    assert enc.returncode == 0, enc.stderr
    assert magic_of(private) == "RAQ" and stat.S_IMODE(private.stat().st_mode) == 0o600  # not widened


def test_several_inputs_need_a_directory_for_output(env: dict[str, str], tmp_path: Path) -> None:
    write_photo(tmp_path / "a.png")
    write_photo(tmp_path / "b.png", seed=1)
    enc = raqcodec("encode", "a.png", "b.png", "-o", "single.raq", "-k", "16", "--model", "tiny", env=env, cwd=tmp_path)
    assert enc.returncode == 2
    assert len(error_lines(enc.stderr)) == 1 and "single.raq" in enc.stderr
    assert not (tmp_path / "single.raq").exists()
    (tmp_path / "file.out").write_text("x")
    enc = raqcodec("encode", "a.png", "b.png", "-o", "file.out", "-k", "16", "--model", "tiny", env=env, cwd=tmp_path)
    assert enc.returncode == 2 and (tmp_path / "file.out").read_text() == "x"


def test_one_named_file_is_redone_with_new_settings_but_batches_resume(env: dict[str, str], tmp_path: Path) -> None:
    encode_here(env, write_photo(tmp_path / "photo.png"), tmp_path / "photo.raq")  # K~ 16
    enc = raqcodec("encode", "photo.png", "-k", "8", "--model", "tiny", env=env, cwd=tmp_path)
    assert enc.returncode == 0, enc.stderr
    assert read_header((tmp_path / "photo.raq").read_bytes()).codebook_size == 8  # not the old file

    (tmp_path / "out").mkdir()
    encode_here(env, write_photo(tmp_path / "tree" / "a.png"), tmp_path / "out" / "a.raq")  # a batch's output
    again = raqcodec("encode", "tree", "-o", "out", "-k", "8", "--model", "tiny", "--json", env=env, cwd=tmp_path)
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "skipped"
    assert read_header((tmp_path / "out" / "a.raq").read_bytes()).codebook_size == 16


def test_dash_is_stdin_and_stdout(env: dict[str, str], tmp_path: Path) -> None:
    png = write_photo(tmp_path / "photo.png").read_bytes()
    enc = raqcodec("encode", "-", "-o", "-", "-k", "16", "--model", "tiny", env=env, cwd=tmp_path, stdin=png)
    assert enc.returncode == 0, enc.stderr
    assert enc.stdout[:4] == b"\x89RAQ"
    dec = raqcodec("decode", "-", "-o", "-", env=env, cwd=tmp_path, stdin=enc.stdout)
    assert dec.returncode == 0, dec.stderr
    assert dec.stdout[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "stdout.png"
    out.write_bytes(dec.stdout)
    assert np.array_equal(pixels(out), np.asarray(raqcodec_api.decode(enc.stdout, model=tiny(env))))
    assert not (tmp_path / "-").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png", "stdout.png"]


def _unwritable_directory(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        return locked
    try:  # root writes through permission bits; /sys refuses new files even to root
        (Path("/sys") / "raqcodec-probe").touch()
    except OSError:
        return Path("/sys")
    pytest.skip("no directory here refuses root")


def test_unwritable_output_directory_fails_before_any_work(env: dict[str, str], tmp_path: Path) -> None:
    write_photo(tmp_path / "photo.png")
    (tmp_path / "blocker.txt").write_text("a file, not a directory")
    cases = [("blocker.txt/out/photo.raq", "blocker.txt")]
    locked = _unwritable_directory(tmp_path)
    cases.append((str(locked / "sub" / "photo.raq"), str(locked)))
    for target, named in cases:
        started = time.perf_counter()
        enc = raqcodec(
            "encode",
            "photo.png",
            "-o",
            target,
            "-k",
            "16",
            "--model",
            "tiny",
            env=env,
            cwd=tmp_path,
            python_flags=("-X", "importtime"),
        )
        took = time.perf_counter() - started
        lines = [line for line in error_lines(enc.stderr) if not line.startswith("import time:")]
        assert enc.returncode == 1, enc.stderr[-2000:]
        assert len(lines) == 1 and named in lines[0] and "Traceback" not in enc.stderr, lines
        assert not imported_torch(enc.stderr), f"{target}: imported torch before failing ({took:.2f} s)"

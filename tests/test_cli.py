"""The `vidrestore image` and `vidrestore weights` commands, end to end, with a tiny model offline."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
from skimage import data

from vidrestore.cli import main
from vidrestore.io.images import read_image, write_image


def run(tiny_checkpoint: str, *args: str) -> int:
    return main(["image", *args, "--weights", tiny_checkpoint, "--detector", "centerface", "-q"])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def test_restores_a_face_and_leaves_the_background(tmp_path, astronaut, tiny_checkpoint, offline):
    src = tmp_path / "a.png"
    write_image(src, astronaut)
    assert run(tiny_checkpoint, str(src), "-o", str(tmp_path / "out.png")) == 0
    out = read_image(tmp_path / "out.png")
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    changed = np.nonzero((out != astronaut).any(axis=2))
    assert len(changed[0]) > 1000  # the face was replaced by the (random) model's output
    assert changed[0].max() < 260 and changed[1].min() > 100 and changed[1].max() < 360
    np.testing.assert_array_equal(out[300:], astronaut[300:])


def test_fidelity_one_keeps_the_original_and_blends_in_between(tmp_path, astronaut, tiny_checkpoint, offline):
    src = tmp_path / "a.png"
    write_image(src, astronaut)
    for f in ("0", "0.5", "1"):
        assert run(tiny_checkpoint, str(src), "-o", str(tmp_path / f"f{f}.png"), "--fidelity", f) == 0
    f0, f5, f1 = (read_image(tmp_path / f"f{f}.png").astype(int) for f in ("0", "0.5", "1"))
    np.testing.assert_array_equal(f1, astronaut)
    assert np.abs(f5 - (f0 + f1) / 2).max() <= 1.0 and np.abs(f5 - f1).max() > 20


def test_directories_upscale_grey_16_bit_and_faceless_images(tmp_path, astronaut, tiny_checkpoint, offline):
    inp = tmp_path / "in"
    (inp / "sub").mkdir(parents=True)
    grey16 = (cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257)[:300, :400]
    write_image(inp / "sub" / "grey16.png", grey16)
    write_image(inp / "coffee.png", data.coffee())
    assert run(tiny_checkpoint, str(inp), "-o", str(tmp_path / "out"), "--upscale", "2") == 0
    grey = read_image(tmp_path / "out" / "in" / "sub" / "grey16.png")
    assert grey.shape == (600, 800) and grey.dtype == np.uint16
    coffee = read_image(tmp_path / "out" / "in" / "coffee.png")
    assert coffee.shape == (800, 1200, 3)
    # No face: the image only went through the bicubic enlargement.
    expected = cv2.resize(data.coffee().astype(np.float32), (1200, 800), interpolation=cv2.INTER_CUBIC)
    assert np.abs(coffee - expected.clip(0, 255)).mean() < 1.0
    assert run(tiny_checkpoint, str(inp / "coffee.png"), "-o", str(tmp_path / "same.png")) == 0
    np.testing.assert_array_equal(read_image(tmp_path / "same.png"), data.coffee())


@pytest.mark.parametrize(
    "case,needle",
    [
        ("missing", "no such file"),
        ("text", "not an image"),
        ("truncated_png", "truncated"),
        ("truncated_jpg", "truncated"),
        ("same_as_input", "overwrite an input"),
        ("exists", "--overwrite"),
    ],
)
def test_bad_inputs_get_one_clear_line(tmp_path, astronaut, tiny_checkpoint, offline, capsys, case, needle):
    good = tmp_path / "good.png"
    write_image(good, astronaut)
    out = tmp_path / "out.png"
    src = tmp_path / f"{case}.png"
    if case == "text":
        src.write_text("not a picture")
    elif case.startswith("truncated"):
        suffix = ".png" if case.endswith("png") else ".jpg"
        src = src.with_suffix(suffix)
        buf = cv2.imencode(suffix, astronaut)[1].tobytes()
        src.write_bytes(buf[: len(buf) // 2])
    elif case == "same_as_input":
        src, out = good, good
    elif case == "exists":
        src = good
        out.write_bytes(b"keep me")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert run(tiny_checkpoint, str(src), "-o", str(out)) != 0
    assert needle in one_error_line(capsys)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before  # nothing written, nothing lost


def test_bad_options(tmp_path, astronaut, tiny_checkpoint, offline, capsys):
    src = tmp_path / "a.png"
    write_image(src, astronaut)
    assert run(tiny_checkpoint, str(src), "-o", str(tmp_path / "o.png"), "--fidelity", "2") != 0
    assert "--fidelity" in one_error_line(capsys)
    assert run(tiny_checkpoint, str(src), "-o", str(tmp_path / "o.png"), "--device", "cuda:7") != 0
    assert "cuda:7" in one_error_line(capsys)


def test_missing_weights_offline_names_file_url_hash_and_place(tmp_path, astronaut, offline, capsys):
    src = tmp_path / "a.png"
    write_image(src, astronaut)
    assert main(["image", str(src), "-o", str(tmp_path / "o.png"), "--detector", "centerface", "-q"]) == 3
    line = one_error_line(capsys)
    for part in (
        "GFPGANv1.4.pth",
        "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
        "--weights",
        str(tmp_path / "home"),
    ):
        assert part in line, part


def test_weights_list_and_offline_download(offline, capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "gfpgan-v1.4" in out and "missing" in out and "retinaface-r50" in out
    assert main(["weights", "download", "parsenet"]) == 3
    assert "parsing_parsenet.pth" in one_error_line(capsys)


def test_console_script_exits_cleanly_on_bad_input(tmp_path):
    """The installed entry point, in a fresh process: one line, exit 2, no traceback."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vidrestore.cli",
            "image",
            str(tmp_path / "nope.png"),
            "-o",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().count("\n") == 0
        and "no such file" in proc.stderr
        and "Traceback" not in proc.stderr
    )
    helptext = subprocess.run(
        [sys.executable, "-m", "vidrestore.cli", "image", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    for flag in (
        "--model",
        "--weights",
        "--device",
        "--dtype",
        "--detector",
        "--upscale",
        "--only-center-face",
        "--fidelity",
    ):
        assert flag in helptext

"""--color: the luma-chroma split, the tone transfer, black-and-white detection per shot, and a grey film
through the whole CLI (its chroma planes read back)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tests.clips import face_path, render
from vidrestore.cli import main
from vidrestore.faces.colour import adds_colour, colour_faces, from_ycc, match_colour, to_ycc
from vidrestore.faces.film import FilmContext, FilmState

S = 32


def _weighted(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    total = w.sum()
    mean = (x * w).sum(dim=(2, 3)) / total
    return mean, (((x - mean[..., None, None]) ** 2 * w).sum(dim=(2, 3)) / total).sqrt()


def _mask() -> torch.Tensor:
    w = torch.zeros(1, 1, S, S)
    w[..., 4:-4, 4:-4] = 1
    return w


def _face(tone: tuple[float, float, float], seed: int, spread: float = 0.2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.tensor(tone).view(1, 3, 1, 1) + spread * (torch.rand(1, 3, S, S, generator=gen) - 0.5)


def _grey(seed: int, n: int = 1) -> torch.Tensor:
    """Grey pictures with up to 1/255 of independent noise per channel: neutral within the tolerance."""
    gen = torch.Generator().manual_seed(seed)
    y = 0.2 + 0.6 * torch.rand(n, 1, S, S, generator=gen)
    return y + (torch.rand(n, 3, S, S, generator=gen) * 2 - 1) / 255


def test_grey_has_no_chroma_and_comes_back_exactly_grey():
    g = torch.rand(2, 1, S, S).expand(2, 3, S, S)
    y, c = to_ycc(g)
    assert torch.equal(c, torch.zeros_like(c)) and torch.equal(y, g[:, :1])
    assert torch.equal(from_ycc(y, c), g)
    x = torch.rand(2, 3, S, S)
    assert torch.allclose(from_ycc(*to_ycc(x)), x, atol=1e-6)
    y, _ = to_ycc(x)
    assert torch.allclose(y, (x * torch.tensor([0.2126, 0.7152, 0.0722]).view(1, 3, 1, 1)).sum(1, True))


def test_match_takes_the_source_tone_under_the_mask_and_keeps_luma_detail():
    source = _face((0.62, 0.45, 0.36), seed=1)
    source[..., :4, :] = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)  # red, outside the mask: ignored
    restored = _face((0.50, 0.52, 0.60), seed=2, spread=0.3)
    w = _mask()
    y, c = match_colour(to_ycc(restored), to_ycc(source), w)
    sy, sc = to_ycc(source)
    ry, _ = to_ycc(restored)
    (cm, cd), (scm, scd) = _weighted(c, w), _weighted(sc, w)
    assert torch.allclose(cm, scm, atol=1e-5) and torch.allclose(cd, scd, atol=1e-5)
    assert torch.allclose(_weighted(y, w)[0], _weighted(sy, w)[0], atol=1e-5)
    assert torch.allclose(y - ry, (y - ry)[..., :1, :1].expand_as(y), atol=1e-6)  # luma only moved


def _context(shots: list[int], state: FilmState | None = None, first: int = 0) -> FilmContext:
    n = len(shots)
    frames = np.arange(first, first + n, dtype=np.int64)
    return FilmContext(np.zeros(n, np.int64), np.array(shots, np.int64), frames, state or FilmState())


def _run(frames: torch.Tensor, context: FilmContext, mode="match", colourises=False, restored=None):
    n = len(frames)
    restored = (
        torch.rand(n, 3, S, S, generator=torch.Generator().manual_seed(5)) if restored is None else restored
    )
    pictures = frames.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)  # measured at every 4th pixel
    out = colour_faces(restored, frames, _mask(), pictures, np.arange(n), context, mode, colourises)
    return restored, out


def _is_grey(x: torch.Tensor) -> bool:
    return torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])


def test_black_and_white_shots_stay_exactly_grey_and_a_colour_shot_after_them_does_not():
    state = FilmState()
    speck = _grey(3, 2)
    speck[0, :, 2, 2] = torch.tensor([1.0, 0.0, 0.0])  # 1 coloured pixel in 1024: black and white
    colour = torch.cat([_face((0.62, 0.45, 0.36), seed=s) for s in (7, 8)])
    _, out = _run(torch.cat([_grey(1, 2), speck]), _context([0, 0, 1, 1], state))
    assert _is_grey(out)
    _, out = _run(torch.cat([_grey(4, 1), colour]), _context([1, 2, 2], state, first=4))
    assert _is_grey(out[:1]) and not _is_grey(out[1:2]) and not _is_grey(out[2:])
    report = state.report["colour"]
    assert report["faces"] == report["faces_kept_neutral"] + 2 == 7
    assert (report["shots"], report["black_and_white_shots"], report["black_and_white_start"]) == (
        3,
        2,
        False,
    )
    assert "black-and-white source" in state.notices[0] and "black-and-white shot" in state.notices[1]
    assert set(state.of("colour")["shots"]) == {1, 2}  # ended shots are dropped


@pytest.mark.parametrize("mode", ["match", "keep", "restore"])
def test_each_mode_on_colour_faces(mode):
    crops = torch.cat([_face((0.62, 0.45, 0.36), seed=s) for s in (1, 2)])
    gen = torch.Generator().manual_seed(5)
    restored, out = _run(
        crops, _context([0, 0]), mode, restored=0.35 + 0.3 * torch.rand(2, 3, S, S, generator=gen)
    )
    if mode == "restore":
        assert out is restored
        return
    (oy, oc), (ry, rc), (_, sc) = to_ycc(out), to_ycc(restored), to_ycc(crops)
    if mode == "keep":
        assert torch.allclose(oc, sc, atol=1e-5) and torch.allclose(oy, ry, atol=1e-5)
    assert (oc - sc).abs().mean() < (rc - sc).abs().mean() / 2


def test_only_restore_with_a_colourising_model_colours_a_grey_face():
    assert (
        adds_colour("restore", True) and not adds_colour("match", True) and not adds_colour("restore", False)
    )
    state = FilmState()
    restored, out = _run(_grey(2, 2), _context([0, 0], state), "restore", colourises=True)
    assert out is restored and not _is_grey(out)
    assert "colourised" in state.notices[0] and state.report["colour"]["faces_kept_neutral"] == 0
    _, out = _run(_grey(2, 2), _context([0, 0]), "restore", colourises=False)
    assert _is_grey(out)


def test_a_grey_yuv420p_film_keeps_neutral_chroma_through_the_cli(tmp_path: Path, tiny_checkpoint, capsys):
    """Neutral chroma planes in, the same out; the faces restored (luma changed); one notice; the report."""
    src, dst, report = tmp_path / "grey.mp4", tmp_path / "out.mp4", tmp_path / "run.json"
    w, h = 160, 120
    with av.open(str(src), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i, box in enumerate(face_path(w, h, 4)):
            grey = render(w, h, box, (128, 128, 128)) @ np.array([0.299, 0.587, 0.114])
            rgb = np.repeat(grey.round().astype(np.uint8)[..., None], 3, axis=2)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))

    def planes(path: Path) -> list[np.ndarray]:
        with av.open(str(path)) as c:
            return [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]

    args = ["restore", str(src), "-o", str(dst), "--weights", tiny_checkpoint, "--detector", "centerface"]
    assert main([*args, "--frame-batch", "4", "--report", str(report), "-q"]) == 0
    before, after = planes(src), planes(dst)
    assert all((p[h:] == 128).all() for p in before)  # the test's own premise
    assert len(after) == 4 and all((p[h:] == 128).all() for p in after)
    assert sum((a[:h] != b[:h]).any() for a, b in zip(after, before, strict=True)) >= 3
    assert "black-and-white source" in capsys.readouterr().err
    film = json.loads(report.read_text())["film"]["colour"]
    assert film["faces_kept_neutral"] == film["faces"] >= 3 and film["mode"] == "match"


def test_the_vapoursynth_filter_keeps_a_grey_float_clip_grey(tiny_checkpoint):
    """The filter takes color=; RGBS frames of a grey film come back with R = G = B, the faces restored."""
    pytest.importorskip("vapoursynth")
    import vapoursynth as vs
    from test_vapoursynth import face_frames, frames_clip, planes, tiny

    grey = [
        np.repeat(f.mean(axis=2, keepdims=True).round().astype(np.uint8), 3, axis=2) for f in face_frames(2)
    ]
    source = frames_clip(grey, vs.RGBS)
    clip = tiny(source, tiny_checkpoint, segment=2, frame_batch=2, color="restore")
    changed = 0
    for src, out in zip(source.frames(), clip.frames(), strict=True):
        p = planes(out)
        assert np.array_equal(p[0], p[1]) and np.array_equal(p[1], p[2])
        changed += not np.array_equal(p, planes(src))
    assert changed == 2

"""Paste masks: ParseNet's masks held along each track (reset at cuts and gaps), the square otherwise."""

from __future__ import annotations

import numpy as np
import torch

from vidrestore.faces.film import FilmContext, FilmState
from vidrestore.faces.masks import GAP, face_masks


class _Parser:
    """Stands in for ParseNet: answers with the masks it is given, one per call's face."""

    def __init__(self, masks: torch.Tensor):
        self.masks = masks

    def mask(self, restored: torch.Tensor) -> torch.Tensor:
        out, self.masks = self.masks[: len(restored)], self.masks[len(restored) :]
        return out


def _noisy(frames: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """A steady face mask whose edge flickers frame to frame, as ParseNet's labels do."""
    g = torch.Generator().manual_seed(seed)
    base = torch.zeros(1, size, size)
    base[:, 4:12, 4:12] = 1
    return (base + 0.3 * torch.rand(frames, 1, size, size, generator=g)).clamp(0, 1)


def _run(masks: torch.Tensor, shots: list[int], frames: list[int], state: FilmState, track: int = 7):
    """One face per frame, all of one track, through face_masks in batches of 4 frames."""
    out = []
    for b in range(0, len(frames), 4):
        n = len(frames[b : b + 4])
        context = FilmContext(
            np.full(n, track, np.int64), np.array(shots[b : b + 4]), np.array(frames[b : b + 4]), state
        )
        restored = torch.zeros(n, 3, masks.shape[-1], masks.shape[-1])
        out.append(face_masks(_Parser(masks[b : b + n]), restored, np.arange(n), context))
    return torch.cat(out)


def _flicker(masks: torch.Tensor) -> float:
    return float((masks[1:] - masks[:-1]).abs().mean())


def test_masks_held_along_a_track_flicker_less_and_say_so_in_the_report():
    raw, state = _noisy(12), FilmState()
    held = _run(raw, [0] * 12, list(range(12)), state)
    assert _flicker(held) < 0.5 * _flicker(raw)
    assert torch.equal(held[0], raw[0])  # a track's first mask is ParseNet's own
    report = state.report["masks"]
    assert report["mask"] == "parsenet" and report["flicker_steps"] == 11
    assert abs(report["flicker_parsenet"] - _flicker(raw)) < 1e-5
    assert abs(report["flicker_averaged"] - _flicker(held)) < 1e-5
    assert report["faces_averaged"] == 11
    assert abs(report["held_vs_parsenet"] - float((held - raw)[1:].abs().mean())) < 1e-5


def test_a_cut_or_a_gap_starts_the_average_afresh_and_old_tracks_are_dropped():
    raw, state = _noisy(8), FilmState()
    frames = [0, 1, 2, 3, 4, 5, 6 + GAP, 7 + GAP]
    held = _run(raw, [0, 0, 0, 1, 1, 1, 1, 1], frames, state)
    assert torch.equal(held[3], raw[3]) and torch.equal(held[6], raw[6])
    assert not torch.equal(held[4], raw[4]) and not torch.equal(held[7], raw[7])
    _run(_noisy(1), [1], [8 + 2 * GAP], state, track=8)
    assert set(state.of("masks")) == {8}


def test_stills_get_parsenet_masks_as_they_are_and_no_parser_the_square():
    raw = _noisy(3)
    context = FilmContext.still([np.zeros(1)] * 3)
    restored = torch.zeros(3, 3, 16, 16)
    assert torch.equal(face_masks(_Parser(raw), restored, np.arange(3), context), raw)
    square = face_masks(None, restored, np.arange(3), FilmContext.still([np.zeros(1)] * 3))
    assert square.shape == (1, 1, 16, 16) and square[0, 0, 8, 8] == 1


def test_a_video_with_parse_reports_its_masks_held_along_the_track(
    tmp_path, tiny_checkpoint, offline, monkeypatch
):
    """End to end: ParseNet (narrow, random, official layout) masks held along the track, in the report."""
    from clips import make_clip

    import vidrestore
    from vidrestore import weights
    from vidrestore.models.parsenet import ParseNet, ParseNetConfig

    torch.manual_seed(0)
    parsenet = tmp_path / "parsenet.pth"
    torch.save(
        ParseNet(ParseNetConfig(encoder=(8, 16, 16), res_depth=1, decoder=(16, 8))).state_dict(), parsenet
    )
    real = weights.resolve
    monkeypatch.setattr(
        weights, "resolve", lambda name, **kw: parsenet if name == "parsenet" else real(name, **kw)
    )
    spec = make_clip(tmp_path / "in.mkv", codec="ffv1", seconds=1.0, audio=False)
    report = vidrestore.restore_video(
        spec.path,
        tmp_path / "out.mkv",
        weights=tiny_checkpoint,
        detector="centerface",
        parse=True,
        frames=3,
        progress=False,
    )
    masks = report.film["masks"]
    assert masks["mask"] == "parsenet" and masks["flicker_steps"] == report.faces - 1
    assert masks["flicker_averaged"] <= masks["flicker_parsenet"]

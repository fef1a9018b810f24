"""The streaming core on its own, as a user who brings their own frames uses it; and proof that the CLI,
the VapourSynth filter and ``eval temporal`` all run it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from clips import face_path, make_clip, render

import vidrestore
from vidrestore.engine import FaceRestorer
from vidrestore.io import VideoSource
from vidrestore.options import EngineOptions, TemporalOptions
from vidrestore.stream import FaceStream

SIZE = (160, 120)


@pytest.fixture(scope="module")
def engine(tiny_checkpoint) -> FaceRestorer:
    return FaceRestorer(
        EngineOptions(weights=tiny_checkpoint, detector="centerface", device="cpu", face_batch=4),
        progress=False,
    )


def frames(n: int) -> list[np.ndarray]:
    boxes = face_path(*SIZE, n)
    return [render(*SIZE, boxes[i]) for i in range(n)]


def run(stream: FaceStream, items: list[np.ndarray], **push) -> list:
    return [r for i, f in enumerate(items) for r in stream.push(f, f"frame {i}", **push)] + stream.flush()


def test_every_frame_comes_back_once_in_order_with_its_tag(engine):
    out = run(FaceStream(engine, TemporalOptions(frame_batch=3)), frames(10))
    assert [r.tag for r in out] == [f"frame {i}" for i in range(10)]
    restored = [r for r in out if r.rgb is not None]
    assert len(restored) >= 8
    for r in restored:
        assert r.rgb.dtype == np.uint8 and r.rgb.shape == (*SIZE[::-1], 3) and r.mask.any() and r.faces


def test_results_are_independent_of_how_frames_are_handed_in(engine):
    """Batches are aligned from the stream's first frame; the look-ahead holds frames, never changes them."""
    clip = frames(12)
    a = run(FaceStream(engine, TemporalOptions(frame_batch=4)), clip)
    stream = FaceStream(engine, TemporalOptions(frame_batch=4))
    b = [r for f in clip[:5] for r in stream.push(f)]
    b += [r for f in clip[5:] for r in stream.push(f)] + stream.flush()
    assert [r.tag for r in b] == list(range(12))
    for x, y in zip(a, b, strict=True):
        assert (x.rgb is None) == (y.rgb is None)
        if x.rgb is not None:
            assert np.array_equal(x.rgb, y.rgb) and np.array_equal(x.mask, y.mask)


def test_context_frames_are_tracked_not_returned(engine):
    stream = FaceStream(engine, TemporalOptions(frame_batch=2))
    clip = frames(8)
    out = [r for i, f in enumerate(clip) for r in stream.push(f, i, restore=2 <= i < 6)] + stream.flush()
    assert [r.tag for r in out] == [2, 3, 4, 5]


def test_ten_bit_and_float_frames_keep_their_type(engine):
    clip = frames(4)
    deep = run(FaceStream(engine, TemporalOptions(frame_batch=4)), [f.astype(np.uint16) * 257 for f in clip])
    flt = run(FaceStream(engine, TemporalOptions(frame_batch=4)), [f.astype(np.float32) / 255 for f in clip])
    assert {r.rgb.dtype for r in deep if r.rgb is not None} == {np.dtype(np.uint16)}
    assert {r.rgb.dtype for r in flt if r.rgb is not None} == {np.dtype(np.float32)}
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        FaceStream(engine).push(clip[0][..., 0])


def test_a_new_frame_size_mid_stream_loses_no_frame(engine):
    """A new size starts a new batch; frames the old batch finalises then are returned, not dropped."""
    small = [render(96, 72, (30, 20, 36, 36)) for _ in range(3)]
    for temporal in (TemporalOptions(frame_batch=4), TemporalOptions(frame_batch=2, smooth_window=1)):
        out = run(FaceStream(engine, temporal), frames(3) + small)
        assert [r.tag for r in out] == [f"frame {i}" for i in range(6)]
        assert {r.rgb.shape for r in out[3:] if r.rgb is not None} <= {(72, 96, 3)}


def test_the_callers_frames_are_not_changed(engine):
    clip = [f.astype(np.float32) / 200 for f in frames(4)]  # values above 1, clipped by the stream
    clip[0][0, 0] = np.nan
    before = [f.copy() for f in clip]
    out = run(FaceStream(engine, TemporalOptions(frame_batch=4)), clip)
    for f, b in zip(clip, before, strict=True):
        assert np.array_equal(f, b, equal_nan=True)
    half = run(FaceStream(engine, TemporalOptions(frame_batch=4)), [f.astype(np.float16) for f in before])
    assert {r.rgb.dtype for r in half if r.rgb is not None} == {np.dtype(np.float16)} and out


def test_the_cli_writes_exactly_what_the_stream_returns(tmp_path, tiny_checkpoint, engine):
    """The CLI adds decode and encode threads around one stream and nothing else: with a lossless codec its
    frames are the stream's, decoded by the same source."""
    spec = make_clip(tmp_path / "in.mkv", codec="ffv1", seconds=0.75, audio=False, pix_fmt="yuv444p")
    out = tmp_path / "out.mkv"
    vidrestore.restore_video(
        spec.path,
        out,
        weights=tiny_checkpoint,
        detector="centerface",
        device="cpu",
        face_batch=4,
        frame_batch=4,
        codec="ffv1",
        pix_fmt="yuv444p",
        progress=False,
    )
    with VideoSource(spec.path) as source:
        decoded = [f.rgb for f in source.frames()]
    stream = FaceStream(engine, TemporalOptions(frame_batch=4))
    expected = [decoded[r.tag] if r.rgb is None else r.rgb for r in run_tags(stream, decoded)]
    with VideoSource(out) as written:
        got = [f.rgb for f in written.frames()]
    assert len(got) == len(expected)
    # 8-bit RGB → limited-range yuv444p → RGB moves a value by up to 3; the faces changed far more.
    changed = 0
    for g, e, d in zip(got, expected, decoded, strict=True):
        assert np.abs(g.astype(int) - e.astype(int)).max() <= 3
        changed += int(np.abs(e.astype(int) - d.astype(int)).max() > 8)
    assert changed >= len(got) // 2


def run_tags(stream: FaceStream, items: list[np.ndarray]) -> list:
    return [r for i, f in enumerate(items) for r in stream.push(f, i)] + stream.flush()


def test_a_cut_given_by_the_caller_ends_every_track(engine):
    clip = frames(24)
    for cut, tracks in ((None, [(0, 23)]), (12, [(0, 11), (12, 23)])):
        stream = FaceStream(engine, TemporalOptions(frame_batch=4))
        for i, f in enumerate(clip):
            stream.push(f, i, cut=None if cut is None else i == cut)
        stream.flush()
        assert [(t.first_frame, t.last_frame) for t in stream.tracks()] == tracks


def test_sixteen_bit_frames_held_as_int32_on_cuda_come_back_exact(engine, monkeypatch):
    """The CUDA path (forced here on the CPU) holds uint16 samples as int32: same results, all 16 bits."""
    from vidrestore import stream as stream_module

    clip = [f.astype(np.uint16) * 257 + np.uint16(i) for i, f in enumerate(frames(2))]
    clip[1][0, :4] = [[0, 1, 32767], [32768, 65534, 65535], [40000, 7, 65535], [1, 2, 3]]
    plain = run(FaceStream(engine, TemporalOptions(frame_batch=2)), clip)
    assert stream_module.held_sample_bytes(True, engine.device) == 2
    monkeypatch.setattr(stream_module, "_wide_samples", lambda device: True)
    assert [stream_module.held_sample_bytes(deep, engine.device) for deep in (False, True)] == [1, 4]
    held = stream_module._to_device(clip[1], engine.device)
    assert held.dtype == torch.int32 and np.array_equal(held.numpy(), clip[1].astype(np.int32))
    assert np.array_equal(stream_module._from_device(held, np.dtype(np.uint16)), clip[1])
    wide = run(FaceStream(engine, TemporalOptions(frame_batch=2)), clip)
    assert [r.tag for r in wide] == [r.tag for r in plain]
    assert any(r.rgb is not None for r in wide)
    for a, b in zip(plain, wide, strict=True):
        assert (a.rgb is None) == (b.rgb is None)
        if a.rgb is not None:
            assert b.rgb.dtype == np.uint16 and np.array_equal(a.rgb, b.rgb)
            assert np.array_equal(a.mask, b.mask)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sixteen_bit_frames_on_cuda():
    """On a real GPU: uint16 frames are held as int32, stack, index and come back exact."""
    from vidrestore import stream as stream_module

    rgb = np.random.default_rng(0).integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    held = stream_module._to_device(rgb, torch.device("cuda"))
    assert held.dtype == torch.int32 and held.is_cuda
    both = torch.stack([held, held])[torch.tensor([1], device=held.device)][0]
    assert np.array_equal(stream_module._from_device(both, np.dtype(np.uint16)), rgb)

"""The memory budget: frame batch and detection follow the frame size and the budget, and say so."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from clips import make_clip

import vidrestore
from vidrestore.engine import FaceRestorer
from vidrestore.memory import DETECT_BYTES_PER_PIXEL, plan_memory
from vidrestore.options import EngineOptions, TemporalOptions

CPU = torch.device("cpu")
GIB = 2**30


def test_4k_with_default_options_fits_comfortably_on_a_24_gb_machine():
    plan = plan_memory(3840, 2160, device=CPU, temporal=TemporalOptions(), budget=12 * GIB)
    assert plan.estimate <= 12 * GIB and not plan.notices
    assert plan.frame_batch == 8 and plan.detect_batch < 8  # the detector takes fewer frames at once
    assert plan.detect_batch * 3840 * 2160 * DETECT_BYTES_PER_PIXEL < 12 * GIB


def test_small_frames_are_left_alone():
    plan = plan_memory(1280, 720, device=CPU, temporal=TemporalOptions(), budget=12 * GIB)
    assert (plan.frame_batch, plan.detect_batch, plan.detect_size, plan.notices) == (8, 8, None, ())


def test_a_tight_budget_shrinks_the_batch_then_the_detection_size_with_notices():
    plan = plan_memory(3840, 2160, device=CPU, temporal=TemporalOptions(), budget=4 * GIB)
    assert plan.frame_batch == 1 and plan.detect_batch == 1 and plan.detect_size is not None
    assert 640 <= plan.detect_size < 3840
    assert any("frame batch 8 → 1" in n for n in plan.notices)
    assert any(f"long side is {plan.detect_size} px" in n for n in plan.notices)
    kept = plan_memory(3840, 2160, device=CPU, temporal=TemporalOptions(), budget=4 * GIB, keep_batch=True)
    assert kept.frame_batch == 8 and not any("frame batch" in n for n in kept.notices)


def test_a_smaller_detect_size_the_user_chose_is_kept():
    plan = plan_memory(3840, 2160, device=CPU, temporal=TemporalOptions(), budget=4 * GIB, detect_size=960)
    assert plan.detect_size == 960 and plan.detect_batch >= 1


def test_an_impossible_budget_says_what_the_frames_need():
    plan = plan_memory(7680, 4320, device=CPU, temporal=TemporalOptions(), budget=4 * GIB)
    assert any("expect swapping" in n for n in plan.notices)


def test_detecting_in_parts_finds_the_same_faces(tmp_path):
    spec = make_clip(tmp_path / "in.mkv", codec="ffv1", seconds=0.25, audio=False)
    import av

    with av.open(str(spec.path)) as c:
        rgb = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    frames = torch.from_numpy(rgb).permute(0, 3, 1, 2)
    engine = FaceRestorer(EngineOptions(detector="centerface"), load_model=False)
    whole = engine.detect(frames)
    engine.detect_batch = 2
    parts = engine.detect(frames)
    assert len(parts) == len(whole) == len(frames)
    for a, b in zip(whole, parts, strict=True):
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-4)


def test_the_run_reports_its_budget_peak_memory_and_what_it_changed(tmp_path, tiny_checkpoint):
    spec = make_clip(tmp_path / "in.mp4", seconds=0.5, audio=False)
    # 10 MiB above the fixed allowance: room for 7 frames of 160x120, not 8.
    budget = 3 * GIB + 10 * 2**20
    report = vidrestore.restore_video(
        spec.path,
        tmp_path / "out.mp4",
        weights=tiny_checkpoint,
        detector="centerface",
        progress=False,
        max_memory=budget,
    )
    assert report.frames == spec.frames
    assert report.memory_budget_mb == budget // 2**20 and report.peak_rss_mb > 100
    assert report.peak_vram_mb is None
    assert any("frame batch 8 → 7" in n for n in report.notices), report.notices


@pytest.mark.parametrize(("text", "value"), [("12G", 12 * GIB), ("1500M", 1500 * 2**20), ("0.5T", 2**39)])
def test_max_memory_takes_sizes(text, value):
    assert EngineOptions(max_memory=text).max_memory == value

"""The acceptance criteria of temporal stability, on small ground-truth clips with the real offline detector.

Errors are in 512-crop pixels. The detector's error has a part that does not change over time at a given
pose and degradation (its bias, shared by every method, which no temporal filter can see); the criteria on
jitter are on the part that does change, see ``vidrestore.evaluation.temporal.alignment_metrics``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from vidrestore.evaluation import temporal as te
from vidrestore.evaluation.clips import CLIPS, VIDEO_DEGRADATION, make_clip
from vidrestore.faces.detection import CenterFaceDetector
from vidrestore.options import EngineOptions


@pytest.fixture(scope="module")
def detector() -> CenterFaceDetector:
    return CenterFaceDetector()


def clip_run(detector: CenterFaceDetector, name: str, frames: int, **kwargs) -> te.Run:
    run = te.detect_clip(detector, make_clip(name, frames, **kwargs))
    te.stabilize(run)
    return run


@pytest.fixture(scope="module")
def still(detector):
    return clip_run(detector, "still", 64)


@pytest.fixture(scope="module")
def static(detector):
    return clip_run(detector, "still", 64, degradation=VIDEO_DEGRADATION)


def test_smoothing_cuts_the_jitter_of_a_still_face_to_a_third(still, static):
    for run in (still, static):
        m = te.alignment_metrics([run])
        assert m["faces_restored"] == m["faces_visible"] == 64
        assert m["ratio_temporal_rms"] <= 1 / 3, m
        assert m["ratio_jitter"] <= 0.15, m
        assert m["smoothed"]["rms"] < m["per_frame"]["rms"]  # the bias is the detector's and stays
        assert m["smoothed"]["p95"] < m["per_frame"]["p95"]


def test_no_lag_at_constant_velocity(detector):
    m = te.alignment_metrics([clip_run(detector, "pan", 40)])
    assert abs(m["lag"]["added"]) <= 1.0, m["lag"]
    assert abs(m["lag"]["added_edges"]) <= 1.0, m["lag"]
    assert abs(m["lag"]["smoothed"] - m["lag"]["per_frame"]) <= 1.0
    assert m["smoothed"]["rms"] < m["per_frame"]["rms"] and m["ratio_jitter"] < 0.4


def test_crossing_faces_keep_their_ids(detector):
    run = clip_run(detector, "cross", 48)
    ids = te.identity_metrics(run)
    assert ids["id_switches"] == 0 and ids["shared_ids"] == 0
    assert len(run.tracks) == 2
    # The face behind is hidden for a while: it is not pasted over the one in front meanwhile.
    hidden = [i for i, f in enumerate(run.found) if len(f) == 1]
    assert hidden and all(len(run.tracked[i]) == 1 for i in hidden[2:-2])


def test_no_track_spans_a_cut(detector):
    run = clip_run(detector, "cut", 40)
    assert run.cuts == [run.clip.cut] == [20]
    ids = te.identity_metrics(run)
    assert ids["tracks_spanning_cut"] == 0 and len(run.tracks) == 2
    assert te.alignment_metrics([run])["lag"]["added_edges"] <= 1.0
    # The same face position on both sides: without the cut detector the track would run across it.
    run.cuts = []
    te.stabilize(run)
    assert te.identity_metrics(run)["tracks_spanning_cut"] == 1


def test_restored_face_flickers_less_than_the_official_way(detector, tmp_path):
    static = clip_run(detector, "still", 24, degradation=VIDEO_DEGRADATION)
    options = EngineOptions(weights=te.tiny_checkpoint(tmp_path), detector="centerface", device="cpu")
    noise = te.temporal_noise(options, static)
    assert noise["ours"] < noise["official"] / 3
    assert noise["ours"] < noise["per_frame_alignment_stored_noise"]
    assert noise["ours"] < noise["smoothed_alignment_random_noise"]
    assert not options.randomize_noise


def test_the_eval_command_writes_every_figure(tmp_path, capsys):
    out = tmp_path / "temporal.json"
    assert te.main(["--frames", "16", "--seeds", "1", "--detect-every", "1", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["clips"]) == {*CLIPS, "static"}
    assert set(result["detect_every"]) == {"1", "2"}
    assert result["acceptance"]["passed"]["no_track_spans_a_cut"]
    assert np.isfinite(result["temporal_noise"]["ours"])
    printed = capsys.readouterr().out
    assert "Alignment error" in printed and "Temporal noise" in printed


def test_the_smoother_bakeoff_still_runs(capsys):
    """The bake-off behind the product's smoother (benchmarks/smoothers.py) stays reproducible."""
    from benchmarks import smoothers

    result = smoothers.run_bakeoff(frames=16, seeds=1)
    assert set(result) == set(smoothers.CANDIDATES)
    assert set(result["ours, strength 1 (default)"]) == set(smoothers.CLIPS)
    assert "Smoothing candidates" in smoothers.format_table(result)

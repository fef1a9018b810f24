"""Tracker, scene cuts and the streaming smoother, on synthetic landmark streams with known truth."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from vidrestore.faces.alignment import FFHQ_TEMPLATE_512, estimate_transforms
from vidrestore.faces.detection import Faces
from vidrestore.faces.tracking import (
    DetectionSchedule,
    SceneCutDetector,
    Stabilizer,
    TrackedFace,
    as_faces,
    rigid_points,
)

EYES = 30.0  # eye distance of the synthetic faces, px


def face(x: float, y: float, eyes: float = EYES) -> np.ndarray:
    """The FFHQ template's 5 points, scaled to ``eyes`` px eye distance and centred on (x, y)."""
    t = FFHQ_TEMPLATE_512.astype(np.float64)
    t = (t - t.mean(axis=0)) * eyes / np.linalg.norm(t[1] - t[0])
    return t + [x, y]


def faces(*landmarks: np.ndarray) -> Faces:
    """Detections of these faces, as the detector returns them."""
    if not landmarks:
        return Faces.empty()
    lm = np.stack(landmarks).astype(np.float32)
    boxes = np.concatenate([lm.min(axis=1) - 10, lm.max(axis=1) + 10], axis=1)
    return Faces(boxes, np.full(len(lm), 0.9, np.float32), lm)


def run(
    stabilizer: Stabilizer, frames: list[Faces | None], cuts: set[int] | None = None
) -> list[list[TrackedFace]]:
    """Push every frame, flush, check each frame came back once and in order, and within the window."""
    out: list[tuple[int, list[TrackedFace]]] = []
    for t, f in enumerate(frames):
        got = stabilizer.push(f, t in (cuts or ()))
        assert all(i <= t for i, _ in got), "a frame came back before it was pushed"
        out += got
        assert len(out) >= t + 1 - stabilizer.window, "a frame was held back longer than the window"
    out += stabilizer.flush()
    assert [i for i, _ in out] == list(range(len(frames)))
    return [f for _, f in out]


def test_every_frame_comes_back_once_in_order_within_the_window():
    rng = np.random.default_rng(0)
    frames = []
    for t in range(120):
        if t % 7 == 3:
            frames.append(None)
        else:
            frames.append(faces(*[face(60 + 90 * k + t, 100) for k in range(rng.integers(0, 4))]))
    for stabilizer in (Stabilizer(), Stabilizer(window=3), Stabilizer(smooth=False, window=0)):
        run(stabilizer, frames, cuts={30, 31, 77})


def test_a_frame_comes_back_as_soon_as_the_window_allows():
    s = Stabilizer(window=4)
    assert [s.push(faces(face(100, 100)), False) for _ in range(4)] == [[], [], [], []]
    assert [i for i, _ in s.push(faces(face(100, 100)), False)] == [0]
    s = Stabilizer(smooth=False, window=0)
    ((i, got),) = s.push(faces(face(100, 100)), False)
    assert i == 0 and got[0].detected


def test_a_cut_returns_everything_before_it_and_ends_every_track():
    s = Stabilizer()
    for _ in range(5):
        assert s.push(faces(face(100, 100)), False) == []
    back = s.push(faces(face(104, 100)), True)  # the same place after the cut: still a new track
    assert [i for i, _ in back] == list(range(5))
    assert all(
        f.track_id == 1 and np.allclose(f.landmarks, face(100, 100), atol=1e-3) for _, fs in back for f in fs
    )
    out = back + s.flush()
    assert {f.track_id for f in out[5][1]} == {2}
    assert [(t.track_id, t.first_frame, t.last_frame, t.faces) for t in s.tracks()] == [
        (1, 0, 4, 5),
        (2, 5, 5, 1),
    ]


def test_ids_survive_short_misses_and_the_gap_is_filled():
    frames = [Faces.empty() if 10 <= t < 14 else faces(face(50 + 2 * t, 120)) for t in range(30)]
    out = run(Stabilizer(), frames)
    assert {f.track_id for fs in out for f in fs} == {1}
    assert all(len(fs) == 1 for fs in out)
    for t in range(10, 14):
        (f,) = out[t]
        assert not f.detected
        assert np.allclose(f.landmarks.mean(axis=0), [50 + 2 * t, 120], atol=0.05)


def test_a_face_that_leaves_is_not_extrapolated():
    frames = [faces(face(50 + 3 * t, 120)) if t < 20 else Faces.empty() for t in range(40)]
    out = run(Stabilizer(), frames)
    assert [len(fs) for fs in out] == [1] * 20 + [0] * 20
    s = Stabilizer(smooth=False, window=0)
    assert [len(fs) for fs in run(s, frames)] == [1] * 20 + [0] * 20


def test_a_face_back_after_a_long_absence_keeps_its_id_but_the_gap_stays_empty():
    # Gone for 12 detected frames (more than max_misses, less than max_lost), back where its motion leads.
    frames = [Faces.empty() if 20 <= t < 32 else faces(face(40 + 3 * t, 120)) for t in range(50)]
    out = run(Stabilizer(), frames)
    assert [len(fs) for fs in out] == [1] * 20 + [0] * 12 + [1] * 18
    assert {f.track_id for fs in out for f in fs} == {1}


def test_crossing_faces_keep_their_ids_through_the_occlusion():
    """Two faces pass each other; the one behind is hidden for 16 frames, its last sightings dragged
    sideways by the occluder's edge, as a real detector's are."""
    frames = []
    for t in range(60):
        front = face(40 + 4 * t, 150, eyes=34)
        back = face(280 - 4 * t, 140)
        hidden = 22 <= t < 38
        if 19 <= t < 22:
            back = back + [6 * (t - 18), 0]  # partly covered: the detection shifts away from the occluder
        frames.append(faces(front) if hidden else faces(back, front))
    out = run(Stabilizer(), frames)
    ids_front = {f.track_id for fs in out for f in fs if abs(f.landmarks.mean(axis=0)[1] - 150) < 5}
    ids_back = {f.track_id for fs in out for f in fs if abs(f.landmarks.mean(axis=0)[1] - 140) < 5}
    assert len(ids_front) == 1 and len(ids_back) == 1 and ids_front != ids_back


def test_many_faces_entering_and_leaving():
    """Twenty faces on a grid, each present for its own span, all drifting together."""
    spans = [(3 * k, 3 * k + 20 + k) for k in range(20)]
    frames = []
    for t in range(100):
        lms = [
            face(30 + 60 * (k % 5) + 0.5 * t, 40 + 60 * (k // 5))
            for k, (a, b) in enumerate(spans)
            if a <= t < b
        ]
        frames.append(faces(*lms))
    s = Stabilizer()
    out = run(s, frames)
    summary = s.tracks()
    assert [(t.first_frame, t.last_frame, t.faces) for t in summary] == [(a, b - 1, b - a) for a, b in spans]
    for t, fs in enumerate(out):
        assert len(fs) == sum(a <= t < b for a, b in spans)
        assert len({f.track_id for f in fs}) == len(fs)


def test_smoothing_removes_jitter_without_lag_even_at_the_edges():
    rng = np.random.default_rng(1)
    truth = [face(60 + 2.5 * t, 120 + 0.5 * t) for t in range(60)]
    frames = [faces(lm + rng.normal(0, 0.8, lm.shape)) for lm in truth]
    out = run(Stabilizer(), frames)
    # The output is the template carried by the smoothed transform; the truth is a template image too.
    raw = rigid_points(np.array([f.landmarks[0] for f in frames])) - truth
    smoothed = np.array([fs[0].landmarks for fs in out]) - truth
    assert np.sqrt((smoothed**2).mean()) < 0.4 * np.sqrt((raw**2).mean())
    assert np.sqrt((smoothed[:8] ** 2).mean()) < 0.8 * np.sqrt((raw[:8] ** 2).mean())  # shorter window
    direction = np.array([2.5, 0.5]) / np.hypot(2.5, 0.5)
    lag = smoothed.mean(axis=1) @ direction  # positive: behind the face
    assert abs(lag.mean()) < 0.1
    assert abs(lag[:8].mean()) < 0.3 and abs(lag[-8:].mean()) < 0.3


def test_smoothing_follows_an_accelerating_face():
    truth = [face(60 + 0.15 * t * t, 120) for t in range(40)]  # 0 → 12 px/frame
    out = run(Stabilizer(), [faces(lm) for lm in truth])
    err = np.array([fs[0].landmarks.mean(axis=0) for fs in out]) - np.array(truth).mean(axis=1)
    assert np.abs(err).max() < 0.5


def test_strength_zero_gives_the_per_frame_transforms():
    rng = np.random.default_rng(2)
    frames = [faces(face(80 + t, 100) + rng.normal(0, 1, (5, 2))) for t in range(20)]
    out = run(Stabilizer(strength=0), frames)
    got = estimate_transforms(np.array([fs[0].landmarks for fs in out]), 512)
    want = estimate_transforms(np.array([f.landmarks[0] for f in frames]), 512)
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_tracked_faces_convert_back_to_detections():
    out = run(Stabilizer(), [faces(face(300, 100), face(80 + t, 100)) for t in range(12)])
    for fs in out:
        f = as_faces(fs)
        assert len(f) == 2 and f.landmarks.dtype == np.float32
        np.testing.assert_array_equal(f.landmarks[1], fs[1].landmarks)
    assert len(as_faces([])) == 0


def test_without_smoothing_the_detections_come_back_untouched():
    rng = np.random.default_rng(3)
    frames = [faces(face(80 + t, 100) + rng.normal(0, 1, (5, 2)), face(300, 100)) for t in range(20)]
    out = run(Stabilizer(smooth=False, window=0), frames)
    for f, fs in zip(frames, out, strict=True):
        by_x = sorted(fs, key=lambda g: g.landmarks[0, 0])
        np.testing.assert_array_equal(np.stack([g.landmarks for g in by_x]), f.landmarks)
        assert [g.track_id for g in by_x] == [1, 2] and all(g.detected for g in fs)


def test_frames_not_detected_carry_the_tracks():
    truth = [face(60 + 2 * t, 120) for t in range(40)]
    schedule = DetectionSchedule(3)
    cuts = {20}
    detected = [schedule(t in cuts) for t in range(40)]
    assert [t for t, d in enumerate(detected) if d] == [0, 3, 6, 9, 12, 15, 18, 20, 23, 26, 29, 32, 35, 38]
    frames = [faces(lm) if d else None for lm, d in zip(truth, detected, strict=True)]
    for stabilizer in (Stabilizer(), Stabilizer(smooth=False, window=2), Stabilizer(smooth=False, window=0)):
        out = run(stabilizer, frames, cuts)
        assert all(len(fs) == 1 for fs in out)
        assert [fs[0].detected for fs in out] == detected
        # Interpolated between detections; with no look-ahead, extrapolated (from two detections on).
        known = [t for t in range(40) if stabilizer.window or t not in (1, 2, 21, 22)]
        for t in known:
            assert np.allclose(out[t][0].landmarks.mean(axis=0), truth[t].mean(axis=0), atol=0.05), t


def test_memory_stays_bounded():
    rng = np.random.default_rng(4)
    s = Stabilizer(window=6)
    for t in range(1500):
        n = 3 if (t // 50) % 2 else 2
        s.push(
            faces(*[face(50 + 80 * k + (t % 50), 100 + k) + rng.normal(0, 0.5, (5, 2)) for k in range(n)]),
            t % 300 == 0,
        )
        assert len(s._pending) <= s.window + 1
        assert len(s._live) <= 6 and len(s._ended) <= 6  # lost tracks wait max_lost frames for their face
        assert all(len(tr.samples) <= 2 * s.window + 3 for tr in s._live + s._ended)
    assert len(s.tracks()) > 25  # summaries only, for the report


def test_scene_cuts_are_found_and_motion_is_not_a_cut():
    astronaut, coffee = data.astronaut(), data.coffee()[:400, :400]
    frames = [np.roll(astronaut, 4 * t, axis=1)[100:400, 50:450] for t in range(20)]
    frames += [np.roll(coffee, -5 * t, axis=0)[50:350, :] for t in range(20)]
    # Back to the first shot (same colours, panning another way): a cut all the same.
    frames += [np.roll(astronaut, 4 * t, axis=0)[100:400, 50:450] for t in range(10)]
    detector = SceneCutDetector()
    assert [t for t, f in enumerate(frames) if detector(f)] == [20, 40]


@pytest.mark.parametrize(
    "kwargs, message",
    [({"window": -1}, "window"), ({"window": 0}, "smoothing"), ({"strength": -1}, "strength")],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Stabilizer(**kwargs)


def test_detecting_every_0_frames_is_refused():
    with pytest.raises(ValueError, match="detect_every"):
        DetectionSchedule(0)

"""Face tracks across frames, scene cuts, and non-causal smoothing of each track's alignment.

Per-frame restorers flicker: the detector's landmarks jitter by a pixel or two (CenterFace's by about 3
crop pixels RMS from where the face sits on its feature grids alone), the aligned crop shifts, and GFP-GAN
renders a slightly different face every frame (GFPGAN #465, #533, #302). :class:`Stabilizer` gives every
face a track with a stable ID and smooths the track's alignment over a look-ahead window, so the crop
stays put.

What is smoothed is the similarity transform that ``estimate_transforms`` fits,
represented by the five FFHQ template points carried into the frame by its inverse ("rigid points"):
they are linear in the transform's four parameters, so any weighted average of them is again a similarity
image of the template, and ``estimate_transforms`` on the output landmarks returns the smoothed transform
exactly. At strength 0 that is the per-frame transform; with the smoothing off, the output is the
detector's own landmarks.

The smoother is a local polynomial fit around each frame with Gaussian weights over the frames t-N…t+N of
the same track and shot (a Savitzky-Golay relative with a bandwidth chosen per frame):

* the bandwidth comes from a plug-in bias/variance balance: noise measured from the track's own second
  differences, acceleration from a local quadratic fit (counted only where it stands out of the noise).
  A still face gets the whole window, an accelerating one a few frames, so it does not lag;
* the fit is linear, so a face at constant velocity has no lag, even where the window is cut short by a
  track's start or end, a gap or a cut. There, its slope is shrunk towards 0 as far as it does not stand
  out of the noise (a positive-part James-Stein factor): extrapolating a slope that is only noise would add
  noise, not remove it.

``benchmarks/smoothers.py`` measures the alternatives (Gaussian average, fixed local-linear, Savitzky-Golay,
RTS, forward-backward One-Euro) on the same clips; this one was the best balance of noise and lag.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np
from filterpy.common import Q_discrete_white_noise
from filterpy.kalman import KalmanFilter
from scipy.linalg import block_diag
from scipy.optimize import linear_sum_assignment

from vidrestore.faces.alignment import FFHQ_TEMPLATE_512, estimate_transforms, invert_affine
from vidrestore.faces.detection import Faces

MAX_SIGMA = 8.0  # frames: the widest Gaussian the plug-in rule picks
MIN_SIGMA = 1.0  # frames: the narrowest, however fast the face accelerates
# The plug-in optimum assumes independent noise from frame to frame; the detector's errors are correlated
# over frames (its grid error changes slowly with the face's position), so the rule underestimates the
# variance. 1.5 times its bandwidth measured best (``benchmarks/smoothers.py``): this is strength 1.
BANDWIDTH_FACTOR = 1.5
CURVATURE_SIGNIFICANCE = 2.5  # an acceleration counts once its square exceeds this many times its variance
SLOPE_SIGNIFICANCE = 4.0  # the same for a velocity, where the window is one-sided
# Association costs are distances from a track's predicted centre in face sizes (the RMS radius of the five
# template points, about 0.6 eye distances), plus twice the log of the size ratio.
GATE = 0.5  # for tracks seen lately, and for lost ones coming back
GATE_JUMP = 1.0  # a second chance for tracks seen lately, for faces that jumped
LOST_GATE_GROWTH = 0.03  # per frame away: a lost track's gate widens with its prediction's uncertainty
HISTORY = 32  # detections per track for the robust line


def _process_noise() -> np.ndarray:
    """Kalman process noise for a face of size 1: accelerations of 1 % of the size per frame² (the size's
    own at a quarter of that). Low, so that velocities are steady enough to predict a face through a second
    of occlusion."""
    q = Q_discrete_white_noise(dim=2, dt=1.0, var=0.01**2)
    # filterpy's blocks are (position, velocity) per axis; the state is (x, y, size, vx, vy, vsize).
    perm = [0, 2, 4, 1, 3, 5]
    return block_diag(q, q, q * 0.25)[np.ix_(perm, perm)]


_Q_UNIT = _process_noise()
_R_UNIT = np.diag([0.04, 0.04, 0.03]) ** 2  # measurement noise of centre and size, for a face of size 1


@dataclass(frozen=True)
class TrackedFace:
    """A face to restore in one frame, with the ID of its track."""

    track_id: int
    landmarks: np.ndarray  # (5, 2) float32, smoothed when smoothing is on
    box: np.ndarray  # (4,) float32
    score: float
    detected: bool  # False: filled in (gap interpolation / prediction), not seen by the detector this frame


@dataclass(frozen=True)
class TrackSummary:
    """One track as the report lists it: the frames it was restored in, first to last, and how many."""

    track_id: int
    first_frame: int
    last_frame: int
    faces: int


def as_faces(tracked: list[TrackedFace]) -> Faces:
    """One frame's tracked faces as :class:`Faces`, for ``FaceRestorer.restore(frames, faces=...)``; in
    track order, so overlapping faces are pasted in the same order in every frame."""
    if not tracked:
        return Faces.empty()
    return Faces(
        np.stack([f.box for f in tracked]).astype(np.float32),
        np.array([f.score for f in tracked], np.float32),
        np.stack([f.landmarks for f in tracked]).astype(np.float32),
    )


class SceneCutDetector:
    """Flags the first frame of a new shot, from a 32x32 thumbnail of each frame.

    The score is the mean of two distances to the previous frame, each in [0, 1]: the total variation of
    the colour histograms (a new shot has new colours) and the mean absolute difference of the thumbnails
    (a new shot has a new layout, even in the same colours). A cut needs the score above ``threshold``
    and ``ratio`` times above the recent median, so that fast motion, which raises every frame's score,
    does not read as a string of cuts.
    """

    def __init__(self, threshold: float = 0.3, ratio: float = 3.0, history: int = 8) -> None:
        self.threshold = threshold
        self.ratio = ratio
        self._scores: deque[float] = deque(maxlen=history)
        self._previous: tuple[np.ndarray, np.ndarray] | None = None

    def score(self, frame: np.ndarray) -> float:
        """The distance of ``frame`` (H, W, 3) uint8 RGB to the previous one; 0 for the first."""
        thumb = cv2.resize(frame, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
        bins = (thumb // 32).astype(np.int64)  # 8 levels per channel
        hist = np.bincount((bins[..., 0] * 64 + bins[..., 1] * 8 + bins[..., 2]).ravel(), minlength=512)
        hist = hist / hist.sum()
        previous, self._previous = self._previous, (thumb, hist)
        if previous is None:
            return 0.0
        histogram = 0.5 * float(np.abs(hist - previous[1]).sum())
        layout = float(np.abs(thumb - previous[0]).mean()) / 128
        return (histogram + min(1.0, layout)) / 2

    def __call__(self, frame: np.ndarray) -> bool:
        """True if a cut precedes ``frame``."""
        s = self.score(frame)
        recent = float(np.median(self._scores)) if self._scores else 0.0
        cut = s > self.threshold and s > self.ratio * recent
        if cut:
            self._scores.clear()
        else:
            self._scores.append(s)
        return cut


class DetectionSchedule:
    """Which frames to run the detector on when detecting only every ``every`` frames.

    Every ``every``-th frame of a shot, counted from its first, so the first frame after a cut is always
    detected. The frames in between are pushed as ``Stabilizer.push(None, cut)``.
    """

    def __init__(self, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"detect_every must be at least 1, not {every}")
        self.every = every
        self._count = 0

    def __call__(self, cut: bool) -> bool:
        """Whether to detect in the next frame (``cut``: a cut precedes it)."""
        if cut:
            self._count = 0
        detect = self._count % self.every == 0
        self._count += 1
        return detect


@dataclass(frozen=True)
class _Sample:
    """One detection of a track."""

    frame: int
    misses: int  # detected frames on which the track was missed just before this one (the gap it closes)
    rigid: np.ndarray  # (5, 2) float64: the template points under the inverse of the fitted transform
    landmarks: np.ndarray  # (5, 2) float32, as detected
    box: np.ndarray  # (4,) float32
    score: float


def rigid_points(landmarks: np.ndarray) -> np.ndarray:
    """(N, 5, 2) landmarks → (N, 5, 2) FFHQ template points carried into the frame by each face's fit."""
    if len(landmarks) == 0:
        return np.zeros((0, 5, 2))
    crop_to_frame = invert_affine(estimate_transforms(landmarks, 512))
    template = FFHQ_TEMPLATE_512.astype(np.float64)
    return template @ crop_to_frame[:, :, :2].transpose(0, 2, 1) + crop_to_frame[:, None, :, 2]


def _centre_size(rigid: np.ndarray) -> np.ndarray:
    """Centre x, y and size (RMS distance of the points from their centre) of rigid points (5, 2)."""
    c = rigid.mean(axis=0)
    return np.array([c[0], c[1], np.sqrt(((rigid - c) ** 2).sum(axis=1).mean())])


class _Track:
    """A face followed from frame to frame.

    A constant-velocity Kalman filter (filterpy) on its centre and size predicts where to look for it next.
    Once lost, a robust line (Theil-Sen) through its last detections predicts where it may come back: the
    detections of a face going behind another drift with the occluder's edge, and the filter's velocity
    with them. Its recent detections are kept for smoothing.
    """

    def __init__(self, track_id: int, sample: _Sample) -> None:
        self.id = track_id
        self.samples: deque[_Sample] = deque([sample])
        self.misses = 0  # observed frames in a row without a detection
        self.ended = False
        self.history: deque[np.ndarray] = deque(maxlen=HISTORY)  # (frame, x, y, size) per detection
        self.kf = KalmanFilter(dim_x=6, dim_z=3)
        self.kf.F = np.block([[np.eye(3), np.eye(3)], [np.zeros((3, 3)), np.eye(3)]])
        self.kf.H = np.hstack([np.eye(3), np.zeros((3, 3))])
        self._start(_centre_size(sample.rigid), np.zeros(3))
        self.history.append(np.concatenate([[sample.frame], _centre_size(sample.rigid)]))

    def _start(self, z: np.ndarray, velocity: np.ndarray) -> None:
        self.kf.x = np.concatenate([z, velocity])[:, None]
        self.kf.P = np.diag(np.array([0.1, 0.1, 0.05, 0.5, 0.5, 0.1]) ** 2) * z[2] ** 2
        self._tune(z[2])

    @property
    def size(self) -> float:
        return max(1.0, float(self.kf.x[2, 0]))

    def _tune(self, size: float) -> None:
        """Noise in units of the face size, so that one setting serves small and large faces."""
        self.kf.R = _R_UNIT * size**2
        self.kf.Q = _Q_UNIT * size**2

    def predict(self) -> None:
        self._tune(self.size)
        self.kf.predict()

    def robust_motion(self) -> tuple[np.ndarray, np.ndarray]:
        """Theil-Sen line through the recent detections: (x, y, size) at the last one, and per frame."""
        h = np.array(self.history)
        if len(h) < 3:
            return h[-1, 1:], np.zeros(3)
        t, v = h[:, 0], h[:, 1:]
        i, j = np.triu_indices(len(t), 1)
        slope = np.median((v[j] - v[i]) / (t[j] - t[i])[:, None], axis=0)
        return np.median(v - np.outer(t - t[-1], slope), axis=0), slope

    def extrapolate(self, t: int) -> np.ndarray:
        """Where the robust line puts the face in frame ``t`` (at its recent size: too few detections to
        extrapolate a change of size that far)."""
        position, velocity = self.robust_motion()
        velocity[2] = 0.0
        return position + velocity * (t - self.history[-1][0])

    def update(self, sample: _Sample, restart: bool) -> None:
        """Add a detection; ``restart`` the filter there (with the robust velocity) after a long absence."""
        z = _centre_size(sample.rigid)
        if restart:
            self._start(z, self.robust_motion()[1])
        else:
            self.kf.update(z[:, None])
        self.history.append(np.concatenate([[sample.frame], z]))
        self.samples.append(sample)
        self.misses = 0

    @property
    def last(self) -> int:
        return self.samples[-1].frame


class Stabilizer:
    """Streaming tracker + non-causal smoother with a look-ahead of ``window`` frames.

    Call :meth:`push` once per frame, in order, with that frame's detections (``None`` for a frame the
    detector was not run on: the tracks are carried through it) and whether a scene cut precedes it. It
    returns the frames that became final, each as ``(frame_index, faces)``, in order and each exactly once:
    every frame up to ``t - window`` once frame ``t`` is in, and at a cut every frame before it.
    :meth:`flush` returns the rest at the end.

    Tracks: detections are matched to where the tracks' Kalman filters predict their faces (constant
    velocity), by Hungarian assignment on the distance in face sizes; then the leftovers more loosely, for
    faces that jumped. A track missed on up to ``max_misses`` detected frames is still looked for there; one
    missed longer is lost, and keeps its ID for ``max_lost`` detected frames, in case its face comes back
    where its motion predicts (a face that was hidden by another crossing in front of it). A cut ends every
    track.

    Gaps: a frame between two detections of a track, at most ``max_misses`` detected frames apart, gets the
    face filled in (``detected=False``) if both are known by the time the frame is final: gaps up to
    ``window`` frames. A track is never extrapolated past its last detection into a frame where the detector
    ran and did not see it: a face that left, or went behind something, is not pasted back. Only frames the
    detector skipped (``push(None)``) after a track's last detection carry it by extrapolation, when they
    are final before the next detection (skipping more frames than the window, or at a shot's end).

    Memory is bounded by the window: each track keeps the detections its pending frames can still use, and
    a finished track only its :class:`TrackSummary`.
    """

    def __init__(
        self,
        *,
        window: int = 8,
        strength: float = 1.0,
        smooth: bool = True,
        max_misses: int = 5,
        max_lost: int = 30,
    ) -> None:
        if window < 0:
            raise ValueError(f"window must be at least 0, not {window}")
        if smooth and window < 1:
            raise ValueError("smoothing needs a look-ahead window of at least 1 frame")
        if strength < 0:
            raise ValueError(f"strength must be at least 0, not {strength}")
        self.window = window
        self.strength = strength
        self.smooth = smooth
        self.max_misses = max_misses
        self.max_lost = max(max_lost, max_misses)
        self._frame = -1  # the last frame pushed
        self._pending: deque[int] = deque()  # frames not yet returned
        self._live: list[_Track] = []
        self._ended: list[_Track] = []  # ended, but still needed by pending frames
        self._next_id = 1
        self._summaries: dict[int, list[int]] = {}  # id → [first, last, faces]

    def push(self, faces: Faces | None, cut: bool) -> list[tuple[int, list[TrackedFace]]]:
        """Add the next frame's detections (``None``: not detected this frame, carry the tracks)."""
        out = self.flush() if cut else []
        self._frame += 1
        for track in self._live:
            track.predict()
        if faces is not None:
            self._associate(self._frame, faces)
        self._pending.append(self._frame)
        while self._pending and self._pending[0] <= self._frame - self.window:
            out.append(self._emit())
        return out

    def flush(self) -> list[tuple[int, list[TrackedFace]]]:
        """Every frame still pending; all tracks end (a cut does the same)."""
        out = [self._emit() for _ in range(len(self._pending))]
        self._live, self._ended = [], []
        return out

    def tracks(self) -> list[TrackSummary]:
        """Every track restored in at least one returned frame, by ID (first and last such frame, count)."""
        return [TrackSummary(i, *v) for i, v in sorted(self._summaries.items())]

    # -- association ---------------------------------------------------------------------------------

    def _associate(self, t: int, faces: Faces) -> None:
        rigid = rigid_points(faces.landmarks)
        z = [_centre_size(r) for r in rigid]
        tracks = self._live
        recent = [i for i, tr in enumerate(tracks) if tr.misses <= self.max_misses]
        lost = [i for i, tr in enumerate(tracks) if tr.misses > self.max_misses]
        cost = np.zeros((len(tracks), len(z)))
        for i, track in enumerate(tracks):
            if i in recent:
                cost[i] = [_cost(track.kf.x[:3, 0], zj) for zj in z]
            else:  # the longer it was away, the less sure where it comes back
                prediction = track.extrapolate(t)
                cost[i] = [_cost(prediction, zj) - LOST_GATE_GROWTH * (t - track.last) for zj in z]
        detections = list(range(len(z)))
        pairs = _assign(cost, GATE, recent, detections)
        pairs += _assign(cost, GATE_JUMP, recent, detections)
        pairs += _assign(cost, GATE, lost, detections)
        for i, j in pairs:
            track = tracks[i]
            sample = _Sample(
                t, track.misses, rigid[j], faces.landmarks[j], faces.boxes[j], float(faces.scores[j])
            )
            track.update(sample, restart=track.misses > self.max_misses)
        for i in recent + lost:
            tracks[i].misses += 1
        for j in detections:
            sample = _Sample(t, 0, rigid[j], faces.landmarks[j], faces.boxes[j], float(faces.scores[j]))
            self._live.append(_Track(self._next_id, sample))
            self._next_id += 1
        for track in [tr for tr in self._live if tr.misses > self.max_lost]:
            track.ended = True
            self._live.remove(track)
            self._ended.append(track)

    # -- output --------------------------------------------------------------------------------------

    def _emit(self) -> tuple[int, list[TrackedFace]]:
        e = self._pending.popleft()
        faces = []
        for track in sorted(self._live + self._ended, key=lambda tr: tr.id):
            face = self._face(track, e)
            if face is not None:
                faces.append(face)
                s = self._summaries.setdefault(track.id, [e, e, 0])
                s[1], s[2] = e, s[2] + 1
        self._forget()
        return e, faces

    def _face(self, track: _Track, e: int) -> TrackedFace | None:
        """The track's face in frame ``e``, or None where it is not to be restored."""
        samples = track.samples
        if e < samples[0].frame:
            return None
        at = next((s for s in samples if s.frame == e), None)
        if at is None:
            later = next((s for s in samples if s.frame > e), None)
            if later is not None and later.misses > self.max_misses:
                return None  # back after a long absence: not filled
            if later is None and (track.ended or track.misses):
                return None  # past the last detection, and looked for since: not extrapolated
        if not self.smooth:
            if at is not None:
                return TrackedFace(track.id, at.landmarks, at.box, at.score, True)
            return self._interpolated(track, e)
        return self._smoothed(track, e, at is not None)

    def _interpolated(self, track: _Track, e: int) -> TrackedFace:
        """The raw detections either side of ``e``, linearly interpolated (extrapolated past the last)."""
        before = [s for s in track.samples if s.frame < e]
        later = [s for s in track.samples if s.frame > e]
        if later:
            a, b = before[-1], later[0]
        else:
            a, b = before[-2] if len(before) > 1 else before[-1], before[-1]
        u = 0.0 if a.frame == b.frame else (e - a.frame) / (b.frame - a.frame)
        lm = a.landmarks + u * (b.landmarks - a.landmarks)
        box = a.box + u * (b.box - a.box)
        score = min(a.score, b.score)
        return TrackedFace(track.id, lm.astype(np.float32), box.astype(np.float32), score, False)

    def _smoothed(self, track: _Track, e: int, detected: bool) -> TrackedFace:
        support = [s for s in track.samples if abs(s.frame - e) <= self.window]
        # A gap wider than the window, or frames carried past the last detection: keep the nearest ends.
        before = [s for s in track.samples if s.frame < e]
        later = [s for s in track.samples if s.frame > e]
        if before and not any(s.frame <= e for s in support):
            support.insert(0, before[-1])
        if later and not any(s.frame >= e for s in support):
            support.append(later[0])
        # Across a long absence the motion is unknown: the window stops there.
        first = max(
            (n for n, s in enumerate(support) if s.misses > self.max_misses and s.frame <= e), default=0
        )
        last = min(
            (n for n, s in enumerate(support) if s.misses > self.max_misses and s.frame > e), default=None
        )
        support = support[first:last]
        d = np.array([s.frame - e for s in support], np.float64)
        y = np.stack([s.rigid.ravel() for s in support])
        w = smoothing_weights(d, y, self.strength)
        rigid = (w @ y).reshape(5, 2)
        box = w @ np.stack([s.box for s in support])
        score = float(np.mean([s.score for s in support]))
        return TrackedFace(track.id, rigid.astype(np.float32), box.astype(np.float32), score, detected)

    def _forget(self) -> None:
        """Drop what no pending frame can use any more: old detections, and tracks that are done."""
        oldest = self._pending[0] if self._pending else self._frame + 1
        self._ended = [tr for tr in self._ended if tr.last >= oldest]
        for track in self._live + self._ended:
            # Keep the window before the oldest pending frame, one detection before that (a gap's start),
            # and at least two (to extrapolate from).
            while len(track.samples) > 2 and track.samples[1].frame < oldest - self.window:
                track.samples.popleft()


def _cost(prediction: np.ndarray, z: np.ndarray) -> float:
    """How far the measurement ``z`` (centre x, y, size) is from a predicted one, in face sizes."""
    size = max(float(prediction[2]), 1.0)
    return float(np.hypot(*(z[:2] - prediction[:2])) / size + 2 * abs(np.log(max(z[2], 1e-3) / size)))


def _assign(cost: np.ndarray, gate: float, rows: list[int], cols: list[int]) -> list[tuple[int, int]]:
    """Hungarian assignment of ``rows`` to ``cols`` within ``gate``; removes the matched ones from both."""
    if not rows or not cols:
        return []
    sub = cost[np.ix_(rows, cols)]
    r, c = linear_sum_assignment(np.where(sub <= gate, sub, 1e9))
    pairs = [(rows[i], cols[j]) for i, j in zip(r, c, strict=True) if sub[i, j] <= gate]
    for i, j in pairs:
        rows.remove(i)
        cols.remove(j)
    return pairs


def smoothing_weights(d: np.ndarray, y: np.ndarray, strength: float) -> np.ndarray:
    """Weights over the samples at frame offsets ``d`` (values ``y``, (n, k)) that estimate the value at 0.

    See the module docstring: Gaussian weights with a bandwidth from a plug-in bias/variance balance, and
    a local linear fit whose slope is shrunk towards 0 as far as it does not stand out of the noise (which
    only matters where the support is one-sided). Sums to 1; exact for a significant constant velocity.
    """
    n = len(d)
    if n == 1:
        return np.ones(1)
    noise = noise_level(d, y)
    sigma = MAX_SIGMA
    if n >= 5 and noise > 0:
        design = np.stack([np.ones(n), d, d * d], axis=1)
        g = np.linalg.pinv(design.T @ design)
        beta = g @ design.T @ y
        accel2 = 4 * max(0.0, float(np.mean(beta[2] ** 2)) - CURVATURE_SIGNIFICANCE * noise**2 * g[2, 2])
        if accel2 > 0:
            sigma = float(np.clip((noise**2 / (2 * np.sqrt(np.pi) * accel2)) ** 0.2, MIN_SIGMA, MAX_SIGMA))
    sigma *= BANDWIDTH_FACTOR * strength
    if not (d == 0).any():
        # Filling a gap: the detections on both sides must count, however small the bandwidth.
        lo, hi = d[d < 0], d[d > 0]
        span = (hi.min() - lo.max()) if len(lo) and len(hi) else np.abs(d).min()
        sigma = max(sigma, 0.5 * float(span))
    sigma = max(sigma, 1e-3)
    w = np.exp(-0.5 * (d / sigma) ** 2)
    s0, s1, s2 = w.sum(), (w * d).sum(), (w * d * d).sum()
    constant = w / s0
    den = s0 * s2 - s1 * s1
    if den <= 1e-9 * s0 * s2 or noise == 0:
        # Too little support to fit a slope (one frame), or no noise estimate (few detections): exact fit.
        return constant if den <= 1e-9 * s0 * s2 else w * (s2 - d * s1) / den
    linear = w * (s2 - d * s1) / den
    slope = w * (s0 * d - s1) / den
    # The slope, shrunk towards 0 as far as it does not stand out of the noise (positive-part James-Stein).
    b1 = slope @ y
    variance = SLOPE_SIGNIFICANCE * noise**2 * float((slope**2).sum())
    shrink = max(0.0, 1.0 - variance / max(float(np.mean(b1**2)), 1e-12))
    return constant + shrink * (linear - constant)


def noise_level(d: np.ndarray, y: np.ndarray) -> float:
    """Robust per-coordinate noise of samples ``y`` at times ``d``, from their local second differences.

    For three consecutive samples, the middle one's distance from the line through the outer two has
    variance ``noise² (1 + a² + b²)`` (a, b the interpolation weights), whatever the spacing. 0 when there
    are fewer than three samples.
    """
    if len(d) < 3:
        return 0.0
    t0, t1, t2 = d[:-2], d[1:-1], d[2:]
    a = (t2 - t1) / (t2 - t0)
    b = (t1 - t0) / (t2 - t0)
    r = (y[1:-1] - a[:, None] * y[:-2] - b[:, None] * y[2:]) / np.sqrt(1 + a * a + b * b)[:, None]
    return float(1.4826 * np.median(np.abs(r)))

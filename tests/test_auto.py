"""``--model auto``: the per-track rule with hysteresis, and each front end with tiny networks of both kinds.

The networks are a tiny GFP-GAN (``tiny_checkpoint``) under GFP-GAN v1.4's file name and PFSR (its only
configuration) with its fixture's recipe weights, in one weights folder: the registry's size and hash of
v1.4 are lifted for the test, as a fine-tuned file in a weights folder would need.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from clips import BACKGROUND, face_patch
from test_model_pfsr import FIXTURE as PFSR_FIXTURE
from test_model_pfsr import _recipe_tensor

from vidrestore import weights
from vidrestore.auto import HYSTERESIS, AutoRestorer, AutoRule
from vidrestore.cli import main
from vidrestore.engine import FaceRestorer
from vidrestore.errors import WeightsError
from vidrestore.options import EngineOptions
from vidrestore.stills import restore_image

LARGE, SMALL = (8, 9, 110, 110), (130, 40, 52, 52)  # eyes ~24 px and ~11 px apart


def two_faces(width: int = 192, height: int = 128) -> np.ndarray:
    """A frame with one face above the default threshold (16 px between the eyes) and one below it."""
    img = np.empty((height, width, 3), np.uint8)
    img[:] = BACKGROUND
    for x, y, w, h in (LARGE, SMALL):
        img[y : y + h, x : x + w] = cv2_resize(face_patch(), w)
    return img


def cv2_resize(img: np.ndarray, side: int) -> np.ndarray:
    import cv2

    return cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory, tiny_checkpoint: str) -> Path:
    folder = tmp_path_factory.mktemp("auto_weights")
    shutil.copy(tiny_checkpoint, folder / weights.REGISTRY["gfpgan-v1.4"].filename)
    layout = json.loads((PFSR_FIXTURE / "layout.json").read_text())
    g = torch.Generator().manual_seed(1234)
    state = {entry["name"]: _recipe_tensor(entry, g) for entry in layout["state_dict"]}
    path = folder / weights.REGISTRY["pfsr"].filename
    torch.save({"model_state_dict": state, "step": 3, "alpha": 1.0, "iteration": 0}, path)
    return folder


@pytest.fixture(autouse=True)
def _offline_unverified_v14(offline, monkeypatch) -> None:
    spec = weights.REGISTRY["gfpgan-v1.4"]
    monkeypatch.setitem(weights.REGISTRY, "gfpgan-v1.4", replace(spec, size=None, sha256=None))


def _engine(weights_dir: Path, **kw) -> FaceRestorer:
    options = EngineOptions(model="auto", weights_dir=weights_dir, detector="centerface", device="cpu", **kw)
    return FaceRestorer(options, progress=False)


def test_rule_decides_per_track_with_hysteresis() -> None:
    rule = AutoRule("pfsr", "gfpgan-v1.4", 16.0)
    tracks: dict = {}

    def batch(eyes: list[float], ids: list[int]) -> list[str]:
        return rule.choose(np.array(eyes), np.array(ids), tracks).tolist()

    # A new track is decided on the median of its faces in its first batch, not on its first face.
    assert batch([20, 15, 15, 15], [1, 1, 1, 1]) == ["pfsr"] * 4
    assert batch([17, 40], [2, 3]) == ["gfpgan-v1.4", "gfpgan-v1.4"]
    # Faces that straddle the threshold frame to frame never flip a track.
    for _ in range(5):
        assert batch([15, 17, 15, 17, 15, 17], [1, 2, 1, 2, 1, 2]) == ["pfsr", "gfpgan-v1.4"] * 3
    # A zoom: the track changes network once its median leaves the band, and only then.
    assert 16 * HYSTERESIS == 20
    zoom = [batch([e] * 4, [1] * 4)[0] for e in (18, 19.5, 22, 24, 26, 28, 30)]
    assert zoom[:2] == ["pfsr"] * 2 and zoom[-1] == "gfpgan-v1.4"
    assert zoom == sorted(zoom, key=lambda n: n != "pfsr")  # one change, no way back
    assert batch([], []) == []


def test_still_with_two_faces_splits_them_between_the_networks(weights_dir: Path) -> None:
    """Stills decide per face: each face is warped at its own network's template and size and pasted back."""
    engine = _engine(weights_dir)
    assert isinstance(engine, AutoRestorer) and engine.options.model == "auto"
    assert engine.parts["pfsr"].detector is engine.detector  # one detector for both
    seen: dict[str, list] = {"pfsr": [], "gfpgan-v1.4": []}
    for name, part in engine.parts.items():
        part.model.register_forward_hook(lambda m, a, out, name=name: seen[name].append(tuple(a[0].shape)))
    img = two_faces()
    out, n = restore_image(engine, img)
    assert n == 2 and out.shape == img.shape
    assert seen == {"pfsr": [(1, 3, 16, 16)], "gfpgan-v1.4": [(1, 3, 64, 64)]}
    for x, y, w, h in (LARGE, SMALL):  # both faces were pasted back
        assert np.abs(out[y : y + h, x : x + w].astype(int) - img[y : y + h, x : x + w]).mean() > 2
    assert np.array_equal(out[:5], img[:5])  # away from both faces: untouched


def test_mixed_sizes_clip_end_to_end_with_report_and_overlay(tmp_path: Path, weights_dir: Path) -> None:
    src = tmp_path / "two.mp4"
    frame = two_faces()
    with av.open(str(src), "w") as c:
        stream = c.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = frame.shape[1], frame.shape[0], "yuv420p"
        for _ in range(2):
            c.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        c.mux(stream.encode())
    base = ["restore", str(src), "--model", "auto", "--weights-dir", str(weights_dir), "--detector"]
    base += ["centerface", "-q"]
    report = tmp_path / "report.json"
    assert main([*base, "-o", str(tmp_path / "out.mp4"), "--report", str(report)]) == 0
    auto = json.loads(report.read_text())["film"]["auto"]
    assert auto["faces"] == {"pfsr": 2, "gfpgan-v1.4": 2}
    assert sorted(auto["tracks"].values(), key=str) == [{"gfpgan-v1.4": 2}, {"pfsr": 2}]
    assert "pfsr below 16 px" in auto["rule"]
    # The overlay needs no weights, and labels each face with its network.
    overlay = tmp_path / "overlay.json"
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["restore", str(src), "--model", "auto", "--weights-dir", str(empty), "--debug-overlay"]
    args += ["--detector", "centerface", "-q", "-o", str(tmp_path / "overlay.mp4"), "--report", str(overlay)]
    assert main(args) == 0
    assert json.loads(overlay.read_text())["film"]["auto"]["faces"] == {"pfsr": 2, "gfpgan-v1.4": 2}


def test_overlay_labels_each_face_with_its_network(monkeypatch) -> None:
    from vidrestore import stream as stream_module

    labels: list = []
    real = stream_module.draw_overlay
    monkeypatch.setattr(
        stream_module, "draw_overlay", lambda rgb, faces, nets: labels.append(nets) or real(rgb, faces, nets)
    )
    options = EngineOptions(model="auto", detector="centerface", device="cpu")
    engine = FaceRestorer(options, progress=False, load_model=False)
    s = stream_module.FaceStream(engine, overlay=True)
    out = [*s.push(two_faces()), *s.flush()]
    assert len(out) == 1 and out[0].rgb is not None
    assert sorted(labels[0]) == ["gfpgan-v1.4", "pfsr"]


def test_vapoursynth_filter_takes_auto(weights_dir: Path) -> None:
    pytest.importorskip("vapoursynth")
    from test_vapoursynth import frames_clip, planes
    from vidrestore.plugins.vapoursynth import restore

    frame = two_faces()
    clip = restore(
        frames_clip([frame]), model="auto", weights_dir=str(weights_dir), detector="centerface", device="cpu"
    )
    got = clip.get_frame(0)
    out = planes(got).transpose(1, 2, 0)
    assert got.props["VidrestoreFaces"] == 2
    for x, y, w, h in (LARGE, SMALL):
        assert not np.array_equal(out[y : y + h, x : x + w], frame[y : y + h, x : x + w])


def test_missing_component_weights_and_one_checkpoint_are_one_line(
    tmp_path: Path, weights_dir: Path, capsys
) -> None:
    only_v14 = tmp_path / "only_v14"
    only_v14.mkdir()
    name = weights.REGISTRY["gfpgan-v1.4"].filename
    shutil.copy(weights_dir / name, only_v14 / name)
    with pytest.raises(WeightsError, match=r"model auto \(pfsr and gfpgan-v1.4\): generator_checkpoint"):
        _engine(only_v14)
    src = tmp_path / "in.png"
    from vidrestore.io.images import write_image

    write_image(src, two_faces())
    for extra in (["--weights-dir", str(only_v14)], ["--weights", str(src)]):
        assert (
            main(
                [
                    "image",
                    str(src),
                    "-o",
                    str(tmp_path / "out.png"),
                    "--model",
                    "auto",
                    "--detector",
                    "centerface",
                    *extra,
                ]
            )
            != 0
        )
        err = [line for line in capsys.readouterr().err.splitlines() if line]
        assert len(err) == 1 and "Traceback" not in err[0], err
        assert ("generator_checkpoint" if extra[0] == "--weights-dir" else "runs two") in err[0], err


def test_a_track_that_changes_network_starts_its_film_state_afresh(weights_dir: Path) -> None:
    """A zoom moves a track from PFSR (128 px crops) to GFP-GAN: what the texture and mask steps keep per
    track is each network's own, so the switch neither mixes crop sizes nor averages two networks' faces."""
    from vidrestore.faces.film import FilmContext, FilmState

    engine = _engine(weights_dir, texture_smooth=4)
    img = two_faces()
    frames = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    found = engine.detect(frames)[0]
    order = np.argsort(found.eye_distance())
    small, large = found.select(order[:1]), found.select(order[-1:])
    state = FilmState()

    def run(faces, first: int) -> None:
        n = len(faces)
        ids, shots = np.zeros(n, np.int64), np.zeros(n, np.int64)
        context = FilmContext(ids, shots, np.arange(first, first + n), state)
        engine.restore(frames.expand(n, -1, -1, -1), faces=faces, context=context)

    run([small], 0)
    run([large] * 4, 1)
    assert state.report["auto"]["tracks"][0] == {"pfsr": 1, "gfpgan-v1.4": 4}

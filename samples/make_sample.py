"""Regenerate ``samples/degraded_face.mp4``: a real face, degraded as GFP-GAN's paper does, with audio.

The face is NASA's public-domain portrait of Eileen Collins (scikit-image's ``astronaut``). Each frame is
blurred, downsampled ×4, noised and JPEG-compressed, then enlarged back, so there is something to restore.

    python samples/make_sample.py
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data

W, H, FPS, SECONDS = 640, 360, 25, 3


def degraded_frame(i: int, face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    img = np.full((H, W, 3), (92, 84, 70), np.uint8)
    side = 220
    x = int(60 + (W - side - 120) * i / (FPS * SECONDS))
    y = 70 + int(10 * np.sin(i / 8))
    img[y : y + side, x : x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    img = cv2.GaussianBlur(img, (0, 0), 1.5)
    small = cv2.resize(img, (W // 4, H // 4), interpolation=cv2.INTER_AREA).astype(np.float32)
    small = np.clip(small + rng.normal(0, 5, small.shape), 0, 255).astype(np.uint8)
    small = cv2.imdecode(cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 55])[1], cv2.IMREAD_COLOR)
    return cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC)


def main() -> None:
    out_path = Path(__file__).with_name("degraded_face.mp4")
    face = np.ascontiguousarray(data.astronaut()[10:230, 100:320])
    rng = np.random.default_rng(7)
    with av.open(str(out_path), "w") as out:
        video = out.add_stream("libx264", rate=FPS, options={"crf": "23", "preset": "slow"})
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        audio = out.add_stream("aac", rate=48000, layout="mono")
        for i in range(FPS * SECONDS):
            frame = av.VideoFrame.from_ndarray(degraded_frame(i, face, rng), format="rgb24")
            for packet in video.encode(frame):
                out.mux(packet)
        t = np.arange(48000 * SECONDS) / 48000
        tone = (0.2 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)[None]
        for j in range(0, tone.shape[1], 1024):
            chunk = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(tone[:, j : j + 1024]), format="fltp", layout="mono"
            )
            chunk.sample_rate, chunk.pts = 48000, j
            for packet in audio.encode(chunk):
                out.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                out.mux(packet)


if __name__ == "__main__":
    main()

"""NVDEC and NVENC against the CPU codecs, and whether frames reach torch and the encoder without a CPU copy.

    python -m benchmarks.bench_nvcodec [--frames 240] [--size 1920x1080] [--out FILE.json]

One generated H.264 clip (a face moving over a plain background), timed per stage in frames per second:

- decode: libavcodec on the CPU (what ``--hwaccel none`` does); NVDEC downloading every frame to system
  memory (``--hwaccel cuda``); NVDEC keeping frames on the GPU (PyAV's ``is_hw_owned``).
- to torch: the CPU path the pipeline takes today (decoded frame → RGB with our :class:`Converter` →
  ``torch`` tensor uploaded to the GPU) against NVDEC frames taken by DLPack (``zero_copy`` says whether the
  tensor's memory is the decoder's own) and converted NV12 → RGB on the GPU.
- encode: libx264 with our defaults (crf 18, medium); h264_nvenc with our mapped settings from system memory
  (``--codec h264_nvenc``); h264_nvenc fed CUDA tensors wrapped by ``VideoFrame.from_dlpack`` (no copy
  through the CPU). A GPU without NVENC (A100, H100, H200) reports why in its row.

Without CUDA only the CPU rows run; every other row says why it did not. The zero-copy path would pay
when the "to torch" and "encode" rows of the GPU paths beat the CPU ones by more than the pipeline's other
stages cost per frame.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import torch
from av.codec.hwaccel import HWAccel

from tests.clips import make_clip
from vidrestore.io.colour import Colour, Converter
from vidrestore.io.hardware import nvenc_options
from vidrestore.pipeline import versions

# BT.709 limited range, as make_clip tags the clip: Y' in 16..235, Cb/Cr in 16..240.
_KR, _KB = 0.2126, 0.0722


def _timed(fn: Callable[[], int]) -> dict:
    """Frames per second of ``fn`` (which returns its frame count), or why it could not run."""
    try:
        _sync()
        start = time.perf_counter()
        frames = fn()
        _sync()
        seconds = time.perf_counter() - start
    except Exception as exc:  # a benchmark row: the reason is the result
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"frames": frames, "seconds": round(seconds, 3), "fps": round(frames / seconds, 1)}


def _sync() -> None:
    """Wait for the GPU's queued work, so that the clock counts it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _cuda_only(fn: Callable[[], int]) -> dict:
    return _timed(fn) if torch.cuda.is_available() else {"error": "no CUDA device"}


def _decode(path: Path, hwaccel: HWAccel | None, each: Callable[[av.VideoFrame], None] | None = None) -> int:
    n = 0
    with av.open(str(path), hwaccel=hwaccel) as c:
        v = c.streams.video[0]
        v.thread_type = "AUTO"
        for frame in c.decode(v):
            if each is not None:
                each(frame)
            n += 1
    return n


def nv12_to_rgb(y: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) uint8 RGB from NV12 planes on the GPU: BT.709 limited range, chroma repeated 2×2."""
    yf = (y.float() - 16) * (255 / 219)
    c = (uv.float() - 128) * (255 / 224)
    c = c.repeat_interleave(2, 0).repeat_interleave(2, 1)[: y.shape[0], : y.shape[1]]
    cb, cr = c[..., 0], c[..., 1]
    r = yf + 2 * (1 - _KR) * cr
    b = yf + 2 * (1 - _KB) * cb
    g = (yf - _KR * r - _KB * b) / (1 - _KR - _KB)
    return torch.stack((r, g, b), -1).round_().clamp_(0, 255).to(torch.uint8)


def rgb_to_nv12(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NV12 planes (Y: H×W, UV: H/2×W/2×2) from RGB on the GPU, the inverse of :func:`nv12_to_rgb`."""
    r, g, b = rgb.float().unbind(-1)
    y = _KR * r + (1 - _KR - _KB) * g + _KB * b
    cb, cr = (b - y) / (2 * (1 - _KB)), (r - y) / (2 * (1 - _KR))
    h, w = y.shape
    cbcr = torch.stack((cb, cr), -1).reshape(h // 2, 2, w // 2, 2, 2).mean((1, 3))
    y8 = (y * (219 / 255) + 16).round_().clamp_(0, 255).to(torch.uint8)
    uv8 = (cbcr * (224 / 255) + 128).round_().clamp_(0, 255).to(torch.uint8)
    return y8.contiguous(), uv8.contiguous()


def _cpu_to_torch(path: Path) -> int:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    converter: list[Converter] = []

    def each(frame: av.VideoFrame) -> None:
        if not converter:
            colour = Colour.of(frame)
            converter.append(Converter(colour, colour))
        torch.from_numpy(converter[0].to_rgb(frame, "rgb24")).to(device)

    return _decode(path, None, each)


def _gpu_to_torch(path: Path, report: dict) -> int:
    def each(frame: av.VideoFrame) -> None:
        y, uv = (torch.from_dlpack(p) for p in frame.planes[:2])
        report.setdefault("zero_copy", y.data_ptr() == frame.planes[0].buffer_ptr and y.is_cuda)
        nv12_to_rgb(y, uv)

    return _decode(path, HWAccel("cuda", is_hw_owned=True), each)


def _encode(frames: list, codec: str, options: dict[str, str], size: tuple[int, int], gpu: bool) -> int:
    """Encode ``frames`` (VideoFrames, or (Y, UV) CUDA tensors with ``gpu``) into a discarded file."""
    with tempfile.TemporaryDirectory() as tmp, av.open(str(Path(tmp) / "out.mp4"), "w") as out:
        stream = out.add_stream(codec, rate=24, hwaccel=HWAccel("cuda") if gpu else None)
        stream.width, stream.height = size
        stream.pix_fmt = "nv12" if gpu else "yuv420p"
        stream.codec_context.options = options
        for i, item in enumerate(frames):
            if gpu:
                frame = av.VideoFrame.from_dlpack(item, format="nv12", width=size[0], height=size[1])
            else:
                frame = item
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return len(frames)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    results: dict = {"versions": versions(), "size": args.size}
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(
            Path(tmp) / "clip.mp4",
            size=size,
            seconds=args.frames / 24,
            fps=24,
            audio=False,
            options={"preset": "ultrafast", "crf": "18"},
        ).path
        rows = results["rows"] = {}
        rows["decode cpu"] = _timed(lambda: _decode(clip, None))
        rows["decode nvdec (download)"] = _cuda_only(lambda: _decode(clip, HWAccel("cuda")))
        rows["decode nvdec (on gpu)"] = _cuda_only(lambda: _decode(clip, HWAccel("cuda", is_hw_owned=True)))
        rows["to torch rgb: cpu decode + convert + upload"] = _timed(lambda: _cpu_to_torch(clip))
        zero: dict = {}
        rows["to torch rgb: nvdec + dlpack + gpu convert"] = _cuda_only(lambda: _gpu_to_torch(clip, zero))
        results["zero_copy_decode"] = zero.get("zero_copy")
        with av.open(str(clip)) as c:
            frames = list(c.decode(c.streams.video[0]))
        x264 = {"crf": "18", "preset": "medium"}
        rows["encode libx264"] = _timed(lambda: _encode(frames, "libx264", x264, size, gpu=False))
        nvenc = nvenc_options("h264_nvenc", None, None, {})
        rows["encode h264_nvenc (upload)"] = _cuda_only(
            lambda: _encode(frames, "h264_nvenc", nvenc, size, gpu=False)
        )
        planes = [
            rgb_to_nv12(torch.from_numpy(f.to_ndarray(format="rgb24")).cuda())
            for f in (frames if torch.cuda.is_available() else ())
        ]
        rows["encode h264_nvenc (cuda tensors)"] = _cuda_only(
            lambda: _encode(planes, "h264_nvenc", nvenc, size, gpu=True)
        )
    width = max(map(len, rows))
    for name, row in rows.items():
        print(f"{name:<{width}}  {row.get('fps', '-'):>8}  {row.get('error', '')}")
    print(f"zero-copy decode to torch: {results['zero_copy_decode']}")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Time the fused Triton modulated-conv kernels on a CUDA GPU: per StyleConv layer and for the whole GFP-GAN.

    python -m benchmarks.bench_kernels --out bench-out/kernels.json

Variants, each at 512 px on the same random weights (random weights cost what the released ones do), in
``--dtype`` (bf16 by default; every row records its dtype):

1. ``official-fp32-b1``: the official architecture (per-sample weights, grouped conv), fp32, one face per
   call, as GFPGANer runs it; timed at batch 1 only and used as the baseline at every batch;
2. ``official`` (whole model only): the official architecture batched, in the dtype;
3. ``torch``: our PyTorch reference path (shared-weight conv, unfused epilogue), batched;
4. ``compiled``: ``torch.compile`` of path 3;
5. ``ours``: the fused Triton kernels (StyleConv and ToRGB; the U-Net stays in PyTorch);
6. ``ours-graph`` (whole model only): path 5 replayed from a CUDA graph, as the engine can run it.

Timing: CUDA events around groups of calls that cycle through several input sets (so that no input stays in
L2), after warm-up (which also covers autotuning and compilation); the median group gives seconds per call.
FLOPs are counted once with ``torch.utils.flop_counter.FlopCounterMode`` on the reference path; the fraction
of the compute floor is achieved FLOP/s over ``--peak-tflops`` (790, the issue's H100 bf16 figure). The table
goes to stdout and everything, with the GPU, driver, library versions and the kernel's registers, spills and
shared memory, to the JSON file. ``--tiny`` runs the same pipeline on the 64 px test config, a quick check of
the setup (about a minute, most of it Triton compiling the autotuner's candidates).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import triton
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.official import official_gfpgan
from vidrestore import kernels
from vidrestore.models.gfpgan import GFPGANConfig, GFPGANv1Clean, StyleConv

OFFICIAL, OFFICIAL_BATCHED, TORCH, COMPILED, OURS, OURS_GRAPH = (
    "official-fp32-b1",
    "official",
    "torch",
    "compiled",
    "ours",
    "ours-graph",
)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TINY = GFPGANConfig(out_size=64, num_style_feat=32, channel_multiplier=1, narrow=0.0625, num_mlp=2)
ROTATION_BYTES = 4 << 30  # input sets rotate within this much memory (at least 2 sets)


class _Timer:
    """CUDA events on a GPU; on the CPU (gpu_check's smoke run) the wall clock, with the same interface."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.start = torch.cuda.Event(enable_timing=True) if self.cuda else None
        self.end = torch.cuda.Event(enable_timing=True) if self.cuda else None

    def __enter__(self) -> _Timer:
        if self.cuda:
            self.start.record()
        else:
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            self.end.record()
            self.end.synchronize()
            self.seconds = self.start.elapsed_time(self.end) / 1e3
        else:
            self.seconds = time.perf_counter() - self.t0


def time_calls(
    fn: Callable[[int], object], n_sets: int, args: argparse.Namespace, device: torch.device
) -> float:
    """Median seconds per ``fn(set_index)`` call, timed over groups of >= args.sample_ms; with
    ``args.samples == 0`` (the CPU smoke run, where a call can take a minute) the one sizing call's time."""
    for i in range(args.warmup):
        fn(i % n_sets)
    with _Timer(device) as once:
        fn(0)
    group = max(1, math.ceil(args.sample_ms / 1e3 / max(once.seconds, 1e-6)))
    times = [] if args.samples else [once.seconds]
    for s in range(args.samples):
        with _Timer(device) as timer:
            for i in range(group):
                fn((s * group + i) % n_sets)
        times.append(timer.seconds / group)
    return statistics.median(times)


def device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


Run = Callable[[dict], torch.Tensor]


def measure(
    run: Run, sets: list[dict], module: nn.Module, impl: str, args: argparse.Namespace
) -> tuple[float, torch.Tensor]:
    """Seconds per call of ``run`` cycling through ``sets`` with ``module``'s modulated convs on ``impl``
    ("triton" or "torch"), and its output for the first set (kept from a timed call: no extra call)."""
    kernels.set_kernel_impl(module, impl)
    first: list[torch.Tensor] = []

    def call(i: int) -> None:
        out = run(sets[i])
        if i == 0 and not first:
            first.append(out.clone())  # a CUDA graph's static output is overwritten by the next replay

    with torch.no_grad():
        seconds = time_calls(call, len(sets), args, device_of(module))
    return seconds, first[0]


def count_flops(run: Run, inputs: dict, module: nn.Module) -> int:
    """FLOPs (2 per MAC) of the PyTorch reference path; Triton kernels are invisible to the counter."""
    kernels.set_kernel_impl(module, "torch")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        run(inputs)
    return counter.get_total_flops()


def nbytes(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    return sum(map(nbytes, value)) if isinstance(value, tuple | list) else 0


def rotation(make: Callable[[int], dict]) -> list[dict]:
    """Input sets ``make(seed)``: 2 to 4 of them, as many as fit in ROTATION_BYTES."""
    first = make(0)
    count = max(2, min(4, ROTATION_BYTES // max(nbytes(list(first.values())), 1)))
    return [first] + [make(seed) for seed in range(1, count)]


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


@dataclass
class Layer:
    """One of the decoder's StyleConvs, with the official module that computes the same thing."""

    name: str
    ours: StyleConv
    official: nn.Module
    noise: torch.Tensor
    size: int  # input resolution
    sft: bool  # CS-SFT after it (the upsampling conv of each resolution >= 8 px)

    def inputs(self, batch: int, dtype: torch.dtype, seed: int) -> dict:
        """x (NCHW and channels-last), the W code and, for the SFT layers, the U-Net's (scale, shift)."""
        device = device_of(self.ours)
        gen = torch.Generator(device=device).manual_seed(seed)
        c_out, c_in = self.ours.modulated_conv.weight.shape[1:3]
        out_size = self.size * (2 if self.ours.modulated_conv.upsample else 1)
        feat = self.ours.modulated_conv.modulation.in_features

        def rand(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=gen, device=device, dtype=dtype)

        x = rand(batch, c_in, self.size, self.size)
        inputs = {"x": x, "x_cl": x.contiguous(memory_format=torch.channels_last), "style": rand(batch, feat)}
        sft_shape = (batch, c_out // 2, out_size, out_size)
        inputs["sft"] = (rand(*sft_shape), rand(*sft_shape)) if self.sft else None
        return inputs

    def run_official(self, s: dict) -> torch.Tensor:
        """Upstream's StyleConv, then its split/cat CS-SFT."""
        out = self.official(s["x"], s["style"], noise=self.noise.float())
        if s["sft"] is None:
            return out
        out_same, out_sft = torch.split(out, out.shape[1] // 2, dim=1)
        return torch.cat([out_same, out_sft * s["sft"][0] + s["sft"][1]], dim=1)

    def variants(self, compiled: Callable[..., torch.Tensor]) -> dict[str, tuple[str, Run]]:
        """Variant name -> (kernel impl, function of one input set)."""
        return {
            TORCH: ("torch", lambda s: self.ours(s["x"], s["style"], self.noise, s["sft"])),
            COMPILED: ("torch", lambda s: compiled(s["x"], s["style"], self.noise, s["sft"])),
            OURS: (
                "triton",
                lambda s: self.ours(s["x_cl"], s["style"], self.noise, s["sft"]),
            ),  # as in the model
        }


def decoder_layers(ours: GFPGANv1Clean, official: nn.Module) -> list[Layer]:
    dec, off = ours.stylegan_decoder, official.stylegan_decoder
    convs = [(dec.style_conv1, off.style_conv1), *zip(dec.style_convs, off.style_convs, strict=True)]
    layers = []
    for idx, (conv, official_conv) in enumerate(convs):
        c_out, c_in = conv.modulated_conv.weight.shape[1:3]
        upsample = conv.modulated_conv.upsample
        out_size = 2 ** ((idx + 5) // 2)
        size = out_size // 2 if upsample else out_size
        name = f"conv{idx:02d} {'up ' if upsample else ''}{size}->{out_size}px {c_in}->{c_out}"
        noise = getattr(dec.noises, f"noise{idx}")
        layers.append(Layer(name, conv, official_conv, noise, size, sft=upsample))
    return layers


def compile_model(module: nn.Module, args: argparse.Namespace) -> Callable[..., torch.Tensor]:
    """``torch.compile`` with the run's backend: Inductor (``args.compile_mode``) on a GPU; gpu_check's CPU
    smoke run uses "eager" (Dynamo's tracing only: Inductor's C++ build takes minutes on 2 loaded cores)."""
    if args.compile_backend == "inductor":
        return torch.compile(module, dynamic=args.compile_dynamic, mode=args.compile_mode)
    return torch.compile(module, dynamic=args.compile_dynamic, backend=args.compile_backend)


def dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in DTYPES.items() if value == dtype)


def bench_layers(
    ours: GFPGANv1Clean, official: nn.Module, args: argparse.Namespace, dtype: torch.dtype = torch.bfloat16
) -> list[dict]:
    rows = []
    ours.to(dtype)
    for layer in decoder_layers(ours, official):
        run_torch = layer.variants(layer.ours)[TORCH][1]
        flops = count_flops(run_torch, layer.inputs(1, dtype, seed=0), layer.ours)
        record = {"scope": "layer", "name": layer.name, "dtype": dtype_name(dtype), "flops_per_face": flops}
        sets = rotation(lambda seed, la=layer: la.inputs(1, torch.float32, seed))
        seconds, _ = measure(layer.run_official, sets, layer.official, "torch", args)
        rows.append({**record, "variant": OFFICIAL, "batch": 1, "s_per_call": seconds})

        compiled = compile_model(layer.ours, args)
        for batch in args.batches:
            sets = rotation(lambda seed, la=layer, b=batch: la.inputs(b, dtype, seed))
            outputs = {}
            for variant, (impl, run) in layer.variants(compiled).items():
                seconds, outputs[variant] = measure(run, sets, layer.ours, impl, args)
                rows.append({**record, "variant": variant, "batch": batch, "s_per_call": seconds})
            rows[-1]["rel_err_vs_torch"] = rel_err(outputs[OURS], outputs[TORCH])
            print(f"{layer.name:32} b={batch:<3} " + summary(rows[-3:]), flush=True)
        torch._dynamo.reset()  # every StyleConv shares one code object: keep under the recompile limit
    return rows


def bench_model(
    ours: GFPGANv1Clean,
    official: nn.Module,
    args: argparse.Namespace,
    dtype: torch.dtype = torch.bfloat16,
    deadline: float | None = None,
) -> list[dict]:
    """Rows per batch of ``args.batches`` and variant, ``ours`` converted to ``dtype``; a variant that fails
    gets a row with its ``error``. Batches not started by ``deadline`` (time.monotonic()) are left out."""
    size, device = ours.config.out_size, device_of(official)
    ours.to(dtype)
    official_batched = copy.deepcopy(official).to(dtype)

    def faces(batch: int, dtype: torch.dtype, seed: int) -> dict:
        gen = torch.Generator(device=device).manual_seed(seed)
        return {"x": (torch.rand(batch, 3, size, size, generator=gen, device=device) * 2 - 1).to(dtype)}

    def official_run(model: nn.Module, dtype: torch.dtype) -> Run:
        return lambda s: model(s["x"].to(dtype), return_rgb=False, randomize_noise=False)[0]

    record = {
        "scope": "model",
        "name": f"GFPGANv1Clean {size}px",
        "dtype": dtype_name(dtype),
        "flops_per_face": count_flops(lambda s: ours(s["x"]), faces(1, dtype, 0), ours),
    }
    official_sets = rotation(lambda seed: faces(1, torch.float32, seed))
    seconds, _ = measure(official_run(official, torch.float32), official_sets, official, "torch", args)
    rows = [{**record, "variant": OFFICIAL, "batch": 1, "s_per_call": seconds}]

    compiled = compile_model(ours, args)
    variants: dict[str, tuple[nn.Module, str, Run]] = {
        OFFICIAL_BATCHED: (official_batched, "torch", official_run(official_batched, dtype)),
        TORCH: (ours, "torch", lambda s: ours(s["x"])),
        COMPILED: (ours, "torch", lambda s: compiled(s["x"])),
        OURS: (ours, "triton", lambda s: ours(s["x"])),
    }
    for batch in args.batches:
        if deadline is not None and time.monotonic() > deadline:
            print(f"{record['name']} {record['dtype']}: time budget spent before batch {batch}", flush=True)
            break
        sets = rotation(lambda seed, b=batch: faces(b, dtype, seed))
        with torch.no_grad():
            official_out = official_run(official, torch.float32)({"x": sets[0]["x"][:1]})  # parity, face 0
        first = len(rows)
        for variant, (module, impl, run) in variants.items():
            row = {**record, "variant": variant, "batch": batch}
            try:
                seconds, out = measure(run, sets, module, impl, args)
            except Exception as e:  # e.g. no kernel for the dtype on this device: recorded, the rest go on
                rows.append({**row, "error": f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"})
                continue
            rows.append({**row, "s_per_call": seconds, "rel_err": rel_err(out[:1], official_out)})
        if device.type == "cuda":
            kernels.set_kernel_impl(ours, "triton")
            with torch.no_grad():
                replay = graph_runner(ours, sets[0]["x"].clone())
            seconds, _ = measure(replay, sets, ours, "triton", args)
            rows.append({**record, "variant": OURS_GRAPH, "batch": batch, "s_per_call": seconds})
            del replay
        print(f"{record['name']:24} {record['dtype']} b={batch:<3} " + summary(rows[first:]), flush=True)
    return rows


def graph_runner(model: nn.Module, static_x: torch.Tensor) -> Run:
    """Capture one forward into a CUDA graph (kernels already tuned and compiled by the eager runs)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        model(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = model(static_x)

    def replay(s: dict) -> torch.Tensor:
        static_x.copy_(s["x"])
        graph.replay()
        return static_out

    return replay


def summary(rows: list[dict]) -> str:
    return "  ".join(
        f"{r['variant']} " + (f"{1e3 * r['s_per_call']:.3f} ms" if "s_per_call" in r else "error")
        for r in rows
    )


def add_derived(rows: list[dict], peak_tflops: float) -> None:
    """Faces/s, achieved TFLOP/s, fraction of the compute floor, and speed-ups over the baselines."""
    timed = [r for r in rows if "s_per_call" in r]
    official = {(r["name"], r["dtype"]): r for r in timed if r["variant"] == OFFICIAL}
    for r in timed:
        r["faces_per_s"] = r["batch"] / r["s_per_call"]
        r["tflops"] = r["flops_per_face"] * r["faces_per_s"] / 1e12
        r["fraction_of_floor"] = r["tflops"] / peak_tflops
    for r in timed:
        if r["variant"] in (OURS, OURS_GRAPH):
            key = (r["name"], r["dtype"])
            same = {
                x["variant"]: x for x in timed if (x["name"], x["dtype"]) == key and x["batch"] == r["batch"]
            }
            torch_paths = [same[v]["faces_per_s"] for v in (TORCH, COMPILED) if v in same]
            r["speedup_vs_official"] = r["faces_per_s"] / official[key]["faces_per_s"]
            if torch_paths:
                r["speedup_vs_best_torch"] = r["faces_per_s"] / max(torch_paths)


def goals(rows: list[dict]) -> dict:
    """The issue's H100 goals: model >= 1000 faces/s in bf16; at batch 16 the fused layers >= 2x the official
    and >= 1.3x the best PyTorch path (per layer, and for the 15 layers together)."""
    timed = [r for r in rows if "s_per_call" in r and r["dtype"] == "bf16"]
    model_best = max(
        (r["faces_per_s"] for r in timed if r["scope"] == "model" and "speedup_vs_official" in r), default=0
    )
    result: dict = {"model_faces_per_s": model_best, "model_goal_1000_met": model_best >= 1000}
    at16 = [r for r in timed if r["scope"] == "layer" and r["batch"] == 16]
    if at16:
        seconds = {
            v: sum(r["s_per_call"] / r["batch"] for r in at16 if r["variant"] == v)
            for v in (TORCH, COMPILED, OURS)
        }
        official = sum(r["s_per_call"] for r in timed if r["scope"] == "layer" and r["variant"] == OFFICIAL)
        ours = [r for r in at16 if r["variant"] == OURS]
        result["layers_b16_total_speedup_vs_official"] = official / seconds[OURS]
        result["layers_b16_total_speedup_vs_best_torch"] = (
            min(seconds[TORCH], seconds[COMPILED]) / seconds[OURS]
        )
        result["layers_b16_meeting_2x_official"] = sum(r["speedup_vs_official"] >= 2 for r in ours)
        result["layers_b16_meeting_1.3x_best_torch"] = sum(r["speedup_vs_best_torch"] >= 1.3 for r in ours)
        result["layers_b16_count"] = len(ours)
    return result


def table_lines(rows: list[dict]) -> list[str]:
    columns = "batch   ms/call   faces/s  TFLOP/s floor%   vs.off vs.torch"
    lines = [f"{'scope':5} {'name':32} {'dtype':5} {'variant':16} {columns}"]
    for r in rows:
        head = f"{r['scope']:5} {r['name']:32} {r['dtype']:5} {r['variant']:16} {r['batch']:>5}"
        if "s_per_call" not in r:
            lines.append(f"{head} {r['error']}")
            continue
        ratios = [f"{r[k]:.2f}x" if k in r else "" for k in ("speedup_vs_official", "speedup_vs_best_torch")]
        lines.append(
            f"{head} {1e3 * r['s_per_call']:>9.3f} {r['faces_per_s']:>9.1f} {r['tflops']:>8.1f} "
            f"{100 * r['fraction_of_floor']:>6.1f} {ratios[0]:>8} {ratios[1]:>8}"
        )
    return lines


def driver_version() -> str | None:
    try:
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        return (
            subprocess.run(query, capture_output=True, text=True, check=True).stdout.strip().splitlines()[0]
        )
    except (OSError, subprocess.CalledProcessError, IndexError):
        return None


def random_model(config: GFPGANConfig) -> GFPGANv1Clean:
    """Ours in fp32 on the CPU with seeded random weights and noise strengths 0.1, as trained weights have
    (at 0, the noise path would go unchecked)."""
    torch.manual_seed(0)
    model = GFPGANv1Clean(config).eval().requires_grad_(False)
    for module in model.modules():
        if isinstance(module, StyleConv):
            module.weight.data.fill_(0.1)
    return model


def build_models(
    config: GFPGANConfig, device: str | torch.device = "cuda"
) -> tuple[GFPGANv1Clean, nn.Module]:
    """Ours and the official architecture in fp32 on ``device``, sharing random weights (noise strength > 0);
    the benchmarks convert ours to the dtype they time."""
    ours = random_model(config)
    official = official_gfpgan(config).requires_grad_(False)
    official.load_state_dict(ours.state_dict(), strict=True)
    return ours.to(device), official.to(device).eval()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("bench-out/kernels.json"))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 32, 64])
    parser.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--sample-ms", type=float, default=20.0, help="minimum length of one timed group")
    parser.add_argument(
        "--peak-tflops", type=float, default=790.0, help="bf16 peak defining the compute floor"
    )
    parser.add_argument("--compile-mode", default="default", help="e.g. max-autotune-no-cudagraphs (slow)")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument(
        "--compile-dynamic", action="store_true", help="one torch.compile for every batch (faster to build)"
    )
    parser.add_argument("--skip-layers", action="store_true")
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="the 64 px test config: a quick setup check")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit(
            "bench_kernels.py needs a CUDA GPU and none is visible (torch.cuda.is_available() is False). "
            "The kernels' correctness is tested without one: pytest tests/test_kernels.py; "
            "python -m benchmarks.gpu_check --cpu-smoke runs the GPU check's plan on the CPU"
        )

    dtype = DTYPES[args.dtype]
    ours, official = build_models(TINY if args.tiny else GFPGANConfig())
    rows = [] if args.skip_layers else bench_layers(ours, official, args, dtype)
    if not args.skip_model:
        rows += bench_model(ours, official, args, dtype)
    add_derived(rows, args.peak_tflops)
    print("\n" + "\n".join(table_lines(rows)))
    report = {
        "benchmark": "fused Triton modulated conv vs official / PyTorch / torch.compile, GFPGANv1Clean",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **environment(),
        "config": "tiny (64 px)" if args.tiny else "official 512",
        "peak_tflops_for_floor": args.peak_tflops,
        "settings": {k: str(v) for k, v in vars(args).items()},
        "goals": goals(rows),
        "kernel_resources": kernels.compiled_kernels(),
        "rows": rows,
    }
    print("\ngoals:", json.dumps(report["goals"], indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


def environment() -> dict:
    """The GPU, driver and library versions a GPU figure is recorded with."""
    cuda = torch.cuda.is_available()
    return {
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "gpu_count": torch.cuda.device_count(),
        "driver": driver_version() if cuda else None,
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }


if __name__ == "__main__":
    main()

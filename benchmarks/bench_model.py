"""Time GFPGANv1Clean per 512 face: ours vs the official architecture, on the same random weights.

Random weights cost exactly what the released ones do (same layout, same FLOPs), so no download is needed.
Both models get the same input; the official one runs its own way (a grouped per-sample conv). Every output is
compared with the official fp32 output for the same batch.

    python -m benchmarks.bench_model [--out bench-out/model_cpu.json] [--batches 1 4] [--runs 3]

(PYTHONPATH is not needed once vidrestore is installed.)
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from benchmarks.official import official_gfpgan
from vidrestore import kernels
from vidrestore.models.gfpgan import GFPGANConfig, GFPGANv1Clean, StyleConv

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# fp16 convs on the CPU take a slow fallback path in PyTorch; fp16 is only worth timing on a GPU.
DEFAULT_DTYPES = {"cpu": ["fp32", "bf16"], "cuda": ["fp32", "fp16", "bf16"]}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_models() -> dict[str, nn.Module]:
    """Ours with random init (noise strengths non-zero, as in trained weights) and official with the same."""
    torch.manual_seed(0)
    ours = GFPGANv1Clean(GFPGANConfig()).eval().requires_grad_(False)
    for module in ours.modules():
        if isinstance(module, StyleConv):
            module.weight.data.fill_(0.1)
    official = official_gfpgan(GFPGANConfig()).requires_grad_(False)
    official.load_state_dict(ours.state_dict(), strict=True)
    return {"official": official, "ours": ours}


def run(impl: str, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if impl == "official":
        return model(x, return_rgb=False, randomize_noise=False)[0]
    return model(x)


def time_interleaved(
    fns: dict[str, Callable[[], torch.Tensor]], cuda: bool, warmup: int, runs: int
) -> tuple[dict[str, list[float]], dict[str, torch.Tensor], dict[str, str]]:
    """Alternate the implementations run by run, so load from other processes hits them alike.

    Returns the wall seconds of each timed run (after the warm-up runs), the last output and, for an
    implementation that raised (e.g. an op without a kernel for the dtype), the first line of its error.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    outputs: dict[str, torch.Tensor] = {}
    errors: dict[str, str] = {}
    for step in range(warmup + runs):
        for name, fn in fns.items():
            if name in errors:
                continue
            start = time.perf_counter()
            try:
                outputs[name] = fn()
                if cuda:
                    torch.cuda.synchronize()
            except RuntimeError as e:
                errors[name] = str(e).strip().splitlines()[0]
                continue
            if step >= warmup:
                times[name].append(time.perf_counter() - start)
    return times, outputs, errors


def bench_device(
    device: str,
    dtypes: list[str],
    models: dict[str, nn.Module],
    faces: torch.Tensor,
    args: argparse.Namespace,
) -> tuple[list[dict], list[dict]]:
    rows, diffs = [], []
    reference: dict[int, torch.Tensor] = {}  # official fp32 output per batch size
    for dtype_name in sorted(dtypes, key=lambda d: d != "fp32"):  # fp32 first: it yields the reference
        dtype = DTYPES[dtype_name]
        on_device = {impl: copy.deepcopy(model).to(device, dtype) for impl, model in models.items()}
        for batch in args.batches:
            x = faces[:batch].to(device, dtype)
            fns = {impl: (lambda i=impl, m=model, x=x: run(i, m, x)) for impl, model in on_device.items()}
            with torch.inference_mode():
                times, outputs, errors = time_interleaved(fns, device == "cuda", args.warmup, args.runs)
            for impl in on_device:
                row = {"device": device, "impl": impl, "dtype": dtype_name, "batch": batch}
                if impl in errors:
                    rows.append({**row, "error": errors[impl]})
                    print(f"{device:5} {impl:9} {dtype_name:5} b={batch}: error {errors[impl]}")
                    continue
                rows.append(
                    {**row, "s_per_face": statistics.median(times[impl]) / batch, "runs_s": times[impl]}
                )
                print(f"{device:5} {impl:9} {dtype_name:5} b={batch}: {rows[-1]['s_per_face']:.3f} s/face")
            outputs = {impl: out.float().cpu() for impl, out in outputs.items()}
            if dtype_name == "fp32" and "official" in outputs:
                reference[batch] = outputs.pop("official")
            for impl, out in outputs.items():
                if batch in reference:
                    diffs.append(
                        {
                            "device": device,
                            "batch": batch,
                            "what": f"{impl}-{dtype_name} vs official-fp32",
                            "max_abs_diff": (out - reference[batch]).abs().max().item(),
                            "ref_max_abs": reference[batch].abs().max().item(),
                        }
                    )
        del on_device
    return rows, diffs


def print_table(rows: list[dict], diffs: list[dict]) -> None:
    official = {
        (r["device"], r["dtype"], r["batch"]): r.get("s_per_face") for r in rows if r["impl"] == "official"
    }
    header = ("device", "impl", "dtype", "batch", "s/face", "official/ours", "off.fp32/ours")
    print("\n{:6} {:9} {:5} {:>5} {:>7} {:>13} {:>13}".format(*header))
    for r in rows:
        head = f"{r['device']:6} {r['impl']:9} {r['dtype']:5} {r['batch']:>5}"
        if "error" in r:
            print(f"{head} error: {r['error']}")
            continue
        same = official.get((r["device"], r["dtype"], r["batch"]))
        fp32 = official.get((r["device"], "fp32", r["batch"]))
        ratios = [f"{base / r['s_per_face']:.2f}x" if base else "-" for base in (same, fp32)]
        print(f"{head} {r['s_per_face']:>7.3f} {ratios[0]:>13} {ratios[1]:>13}")
    print(f"\n{'device':6} {'batch':>5} {'comparison':30} {'max |diff|':>10} {'max |ref|':>9}")
    for d in diffs:
        diff, ref = d["max_abs_diff"], d["ref_max_abs"]
        print(f"{d['device']:6} {d['batch']:>5} {d['what']:30} {diff:>10.2e} {ref:>9.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("bench-out/model_cpu.json"))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--devices",
        nargs="+",
        choices=["cpu", "cuda"],
        default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"],
    )
    parser.add_argument(
        "--dtypes", nargs="+", choices=list(DTYPES), help="default: fp32 bf16 (+ fp16 on CUDA)"
    )
    parser.add_argument(
        "--kernels",
        choices=kernels.KERNEL_IMPLS,
        default="auto",
        help="our StyleConv/ToRGB: fused Triton (on the CPU its interpreter: very slow), PyTorch reference, "
        "or auto (Triton on CUDA, else PyTorch)",
    )
    args = parser.parse_args()

    torch.set_num_threads(os.cpu_count() or 1)
    models = build_models()
    kernels.set_kernel_impl(models["ours"], args.kernels)
    faces = torch.rand(max(args.batches), 3, 512, 512, generator=torch.Generator().manual_seed(1)) * 2 - 1
    rows, diffs = [], []
    for device in args.devices:
        device_rows, device_diffs = bench_device(
            device, args.dtypes or DEFAULT_DTYPES[device], models, faces, args
        )
        rows += device_rows
        diffs += device_diffs

    print_table(rows, diffs)
    report = {
        "benchmark": "GFPGANv1Clean 512 forward, random weights, ours vs official architecture",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cpu": cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if "cuda" in args.devices else None,
        "warmup": args.warmup,
        "runs": args.runs,
        "kernels": args.kernels,
        "timings": rows,
        "max_abs_diff": diffs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""One command that proves and times everything on one GPU: one JSON, one table, under 8 minutes.

    python -m benchmarks.gpu_check [--out bench-out/gpu_check.json] [--steps 1 2 3 4 5]
    python -m benchmarks.gpu_check --cpu-smoke      # the same plan on the CPU: tiny model, Triton interpreter
    python -m benchmarks.gpu_check --dry-run        # print the plan and write it, run nothing

Steps, in order; each runs in its own try block (a failing step records its error and the rest still run) and
under a time budget (each stops starting new work once its budget is spent; the budgets add up to < 8 min):

1. ``tests``: the CUDA-only tests (``pytest -m gpu``), in a subprocess killed at the budget;
2. ``parity``: every StyleConv and ToRGB call of the model, on the inputs a real forward gives it, through the
   fused kernel in fp32, fp16 and bf16 against the PyTorch reference in float64 on the same rounded inputs;
   the whole model in each dtype (kernels) against fp32 (reference path, TF32 off); CUDA-graph replay
   against eager, which must be bit-equal;
3. ``throughput``: faces/s at batch 1, 8, 16, 32, 64 in bf16 and fp16 for ours (kernels, and replayed from a
   CUDA graph), ours on the PyTorch reference path, that under ``torch.compile``, and the official
   architecture (batched in the dtype, and fp32 at batch 1), with the fraction of the compute floor
   (``benchmarks.bench_kernels.bench_model``);
4. ``video``: the 1080p H.264 job against the per-frame official pipeline with per-stage seconds and the GPU's
   utilisation (``benchmarks.bench_video.bench``), with the CPU codecs, then NVENC and NVDEC + NVENC through
   the public options where ``vidrestore.options`` and the machine offer them ("not available" otherwise);
5. ``cuda1``: with a second GPU, the model on ``cuda:1`` (kernels, bf16) while device 0 is current, against
   the same model on ``cuda:0``, and the video job on ``cuda:1``.

``--cpu-smoke`` sets ``TRITON_INTERPRET=1`` before anything imports Triton (the fused kernel picks its
interpreter from the tensors' device anyway; the variable covers every other Triton function), uses the 64 px
test model, batch 1 with one call per variant (no warm-up), ``torch.compile``'s "eager" backend (Dynamo
without Inductor's C++ build) and a 6-frame clip, so that the script is known to run before a GPU is lent.
Heavy modules are imported only after that, inside the steps.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PEAK_TFLOPS = 790.0  # H100/H200 dense bf16: the compute floor's peak, as in bench_kernels
TOLERANCE = {"fp32": 1e-5, "fp16": 1e-2, "bf16": 1e-2}  # one layer, relative L2, as tests/test_kernels.py
MODEL_TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 5e-2}  # the whole model against fp32
ROOT = Path(__file__).resolve().parent.parent
GPU_MARK = "@pytest.mark.gpu"
OVER_BUDGET = "not run: the step's time budget was spent"  # the step is "partial", not failed

Row = tuple[str, str, bool | None]  # (item, result, ok: True / False / None for a figure without a goal)


@dataclass
class Plan:
    """What each step runs: the GPU plan, or the same steps scaled down for the CPU smoke run."""

    smoke: bool
    work: Path
    budgets: dict[str, float]
    batches: list[int]
    clip_seconds: float
    warmup: int
    samples: int
    sample_ms: float

    @classmethod
    def make(cls, smoke: bool, work: Path) -> Plan:
        if smoke:
            # Triton's interpreter runs one forward of the tiny model in 10 s (idle 2 cores) to a minute
            # (loaded): one batch, one call per variant, no warm-up
            budgets = {"tests": 30, "parity": 100, "throughput": 120, "video": 45, "cuda1": 5}
            return cls(smoke, work, budgets, [1], 0.25, warmup=0, samples=0, sample_ms=0.0)
        budgets = {"tests": 75, "parity": 60, "throughput": 210, "video": 100, "cuda1": 30}
        return cls(smoke, work, budgets, [1, 8, 16, 32, 64], 3.0, warmup=3, samples=10, sample_ms=20.0)

    @property
    def device(self) -> str:
        return "cpu" if self.smoke else "cuda"

    def config(self) -> Any:
        from benchmarks.bench_kernels import TINY
        from vidrestore.models.gfpgan import GFPGANConfig

        return TINY if self.smoke else GFPGANConfig()


@dataclass
class Step:
    key: str
    title: str
    run: Callable[[Plan, float], tuple[list[Row], dict]]  # (plan, deadline) -> (table rows, JSON data)


@dataclass
class Outcome:
    key: str
    title: str
    status: str  # "ok", "failed" (a check did not pass), "error" (it raised), "partial" (budget), "skipped"
    seconds: float
    budget: float
    rows: list[Row] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    error: str | None = None


class Skip(Exception):
    """A step that cannot run here (e.g. no second GPU): recorded as skipped, not as an error."""


# --- step 1: the CUDA-only tests ------------------------------------------------------------------------


def step_tests(plan: Plan, deadline: float) -> tuple[list[Row], dict]:
    """``pytest -m gpu`` in a subprocess (its own process, as CI runs it), killed at the deadline; only the
    files that hold such tests are collected (others import packages a bare GPU box lacks, VapourSynth)."""
    report = plan.work / "gpu_tests.xml"
    files = [
        str(f.relative_to(ROOT))
        for f in sorted((ROOT / "tests").glob("test_*.py"))
        if GPU_MARK in f.read_text()
    ]
    pytest = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    command = [*pytest, f"--junitxml={report}", *files]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the tests as CI runs them
    try:
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=max(1.0, deadline - time.monotonic()),
        )
    except subprocess.TimeoutExpired as e:
        raise TimeoutError("pytest -m gpu ran past the step's budget") from e
    tail = (done.stdout + done.stderr).strip().splitlines()[-40:]
    if not report.exists():
        raise RuntimeError(f"pytest exited {done.returncode} without a report: " + " | ".join(tail[-3:]))
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    summary = f"{passed} passed, {counts['failures'] + counts['errors']} failed, {counts['skipped']} skipped"
    rows: list[Row] = [("pytest -m gpu", summary, done.returncode in (0, 5) and not failed)]
    rows += [(name, "FAILED", False) for name in failed]
    return rows, {
        "command": " ".join(command[1:]),
        "returncode": done.returncode,
        **counts,
        "failed": failed,
        "output_tail": tail,
    }


# --- step 2: parity --------------------------------------------------------------------------------------


def _fused_forward(model: Any, x: Any) -> tuple[Any, list[tuple[str, Any, tuple, dict, Any]]]:
    """One forward of ``model`` on the fused kernels, and every StyleConv and ToRGB call in it: (name,
    module, args, kwargs, output), cloned. One forward gives both parities: in Triton's interpreter a
    forward of the tiny model takes from 10 s to a minute."""
    import torch

    from vidrestore import kernels
    from vidrestore.models.gfpgan import StyleConv, ToRGB

    def clone(value: Any) -> Any:
        if isinstance(value, tuple):
            return tuple(map(clone, value))
        return value.detach().clone() if isinstance(value, torch.Tensor) else value

    calls, hooks = [], []
    for name, module in model.named_modules():
        if isinstance(module, StyleConv | ToRGB):

            def hook(mod: Any, args: tuple, kwargs: dict, out: Any, name: str = name) -> None:
                calls.append((name, mod, clone(args), clone(kwargs), clone(out)))

            hooks.append(module.register_forward_hook(hook, with_kwargs=True))
    kernels.set_kernel_impl(model, "triton")
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for handle in hooks:
            handle.remove()
    return out, calls


def _cast(value: Any, dtype: Any) -> Any:
    import torch

    if isinstance(value, tuple):
        return tuple(_cast(v, dtype) for v in value)
    return value.to(dtype) if isinstance(value, torch.Tensor) and value.is_floating_point() else value


def _shape(module: Any, args: tuple) -> str:
    conv = module.modulated_conv
    c_out, c_in = conv.weight.shape[1:3]
    up = " up" if getattr(conv, "upsample", False) or getattr(module, "upsample", False) else ""
    return f"{type(module).__name__} {c_in}->{c_out} {args[0].shape[-1]}px{up}"


def step_parity(plan: Plan, deadline: float) -> tuple[list[Row], dict]:
    import copy

    import torch

    from benchmarks.bench_kernels import DTYPES, graph_runner, random_model, rel_err
    from vidrestore import kernels

    device = torch.device(plan.device)
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # exact fp32 references
    try:
        model = random_model(plan.config()).to(device)
        kernels.set_kernel_impl(model, "torch")
        size, batch = model.config.out_size, 1 if plan.smoke else 2
        x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device) * 2 - 1
        with torch.no_grad():
            reference_out = model(x)  # fp32, the reference path
        rows: list[Row] = []
        layers: list[dict] = []
        whole: dict[str, float] = {}
        for dtype_name in ("fp32", "fp16", "bf16"):
            if time.monotonic() > deadline:
                rows.append((f"kernel and model {dtype_name}", OVER_BUDGET, None))
                continue
            dtype = DTYPES[dtype_name]
            out, calls = _fused_forward(copy.deepcopy(model).to(dtype), x.to(dtype))
            for name, module, args, kwargs, fused_out in calls:
                reference = copy.deepcopy(module).double()  # the same rounded weights, exact arithmetic
                kernels.set_kernel_impl(reference, "torch")
                with torch.no_grad():
                    ref = reference(*_cast(args, torch.float64), **_cast(kwargs, torch.float64))
                error = rel_err(fused_out, ref) if torch.isfinite(fused_out).all() else float("inf")
                layers.append(
                    {"layer": name, "shape": _shape(module, args), "dtype": dtype_name, "rel_err": error}
                )
            mine = [r for r in layers if r["dtype"] == dtype_name]
            worst = max(mine, key=lambda r: r["rel_err"])
            n_ok = sum(r["rel_err"] < TOLERANCE[dtype_name] for r in mine)
            rows.append(
                (
                    f"kernel {dtype_name} vs float64, {len(mine)} calls",
                    f"{n_ok}/{len(mine)} < {TOLERANCE[dtype_name]:.0e}; worst {worst['rel_err']:.2e} "
                    f"({worst['shape']})",
                    n_ok == len(mine),
                )
            )
            whole[dtype_name] = rel_err(out, reference_out)
            ok = whole[dtype_name] < MODEL_TOLERANCE[dtype_name]
            rows.append((f"model {dtype_name} (kernels) vs fp32", f"rel {whole[dtype_name]:.2e}", ok))

        graphs: dict[str, Any] = {}
        if device.type != "cuda":
            graphs["skipped"] = "CUDA graphs need a CUDA device"
            rows.append(("CUDA graph replay vs eager", "skipped (no CUDA)", None))
        for dtype_name in ("fp16", "bf16") if device.type == "cuda" else ():
            ours = copy.deepcopy(model).to(DTYPES[dtype_name])
            kernels.set_kernel_impl(ours, "triton")
            new_x = (torch.rand_like(x) * 2 - 1).to(DTYPES[dtype_name])
            with torch.no_grad():
                replay = graph_runner(ours, torch.zeros_like(new_x))
                replayed = replay({"x": new_x}).clone()
                eager = ours(new_x)
            graphs[dtype_name] = (replayed.float() - eager.float()).abs().max().item()
            rows.append(
                (
                    f"CUDA graph replay vs eager {dtype_name}",
                    f"max |diff| {graphs[dtype_name]:.1e}",
                    graphs[dtype_name] == 0,
                )
            )
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    return rows, {
        "tolerance": TOLERANCE,
        "model_tolerance": MODEL_TOLERANCE,
        "layers": layers,
        "model_rel_err": whole,
        "graph_max_abs_diff": graphs,
    }


# --- step 3: throughput ------------------------------------------------------------------------------------


def step_throughput(plan: Plan, deadline: float) -> tuple[list[Row], dict]:
    import copy

    import torch

    from benchmarks import bench_kernels as bk

    args = argparse.Namespace(
        batches=plan.batches,
        warmup=plan.warmup,
        samples=plan.samples,
        sample_ms=plan.sample_ms,
        compile_mode="default",
        compile_backend="eager" if plan.smoke else "inductor",
        compile_dynamic=True,  # one compile per dtype, not per batch: inside the budget
    )
    ours, official = bk.build_models(plan.config(), plan.device)
    start, records = time.monotonic(), []
    for i, dtype_name in enumerate(("bf16", "fp16")):
        share = start + (deadline - start) * (i + 1) / 2  # each dtype gets half the budget
        model = copy.deepcopy(ours)  # each dtype from the fp32 weights, not from the other dtype's rounding
        records += bk.bench_model(model, official, args, bk.DTYPES[dtype_name], deadline=share)
        del model
        torch._dynamo.reset()
    bk.add_derived(records, PEAK_TFLOPS)
    rows: list[Row] = []
    for dtype_name in ("bf16", "fp16"):
        for batch in plan.batches:
            same = {r["variant"]: r for r in records if r["dtype"] == dtype_name and r["batch"] == batch}
            if not same or set(same) == {bk.OFFICIAL}:
                rows.append((f"faces/s {dtype_name} b={batch}", OVER_BUDGET, None))
                continue
            parts = [
                f"{v} {same[v]['faces_per_s']:.4g}" if "faces_per_s" in same[v] else f"{v} error"
                for v in (bk.OURS, bk.OURS_GRAPH, bk.TORCH, bk.COMPILED, bk.OFFICIAL_BATCHED)
                if v in same
            ]
            best = max(
                (r for r in same.values() if r["variant"] in (bk.OURS, bk.OURS_GRAPH) and "faces_per_s" in r),
                key=lambda r: r["faces_per_s"],
                default=None,
            )
            floor = f"; floor {100 * best['fraction_of_floor']:.1f}%" if best else ""
            ok = all("error" not in r for r in same.values())
            rows.append((f"faces/s {dtype_name} b={batch}", " | ".join(parts) + floor, ok))
    base = next((r for r in records if r["variant"] == bk.OFFICIAL), None)
    if base is not None:
        rows.append(
            (
                "official fp32 b=1 (GFPGANer way)",
                f"{base['faces_per_s']:.4g} faces/s; {base['flops_per_face'] / 1e9:.1f} GFLOP/face",
                None,
            )
        )
    return rows, {
        "peak_tflops_for_floor": PEAK_TFLOPS,
        "goals": bk.goals(records),
        "rows": records,
        "table": bk.table_lines(records),
    }


# --- step 4: the video job -------------------------------------------------------------------------------


def video_variants(cuda: bool) -> dict[str, dict | str]:
    """Name -> the options of the run, or why it is not available here."""
    import av

    from vidrestore.options import TABLE

    variants: dict[str, dict | str] = {"cpu codecs": {}}
    nvenc = "h264_nvenc" in av.codecs_available
    reasons = [
        why
        for why, missing in (("no CUDA device", not cuda), ("PyAV has no h264_nvenc", not nvenc))
        if missing
    ]
    variants["nvenc"] = f"not available: {'; '.join(reasons)}" if reasons else {"codec": "h264_nvenc"}
    if "hwaccel" not in TABLE:
        reasons.append("vidrestore.options has no hwaccel setting")
    variants["nvdec+nvenc"] = (
        f"not available: {'; '.join(reasons)}" if reasons else {"hwaccel": "cuda", "codec": "h264_nvenc"}
    )
    return variants


def step_video(plan: Plan, deadline: float) -> tuple[list[Row], dict]:
    import torch

    from benchmarks.bench_video import bench, prepare

    config = plan.config()
    work = plan.work / "video"
    src, weights, frames = prepare(work, plan.clip_seconds, config)
    rows: list[Row] = []
    runs: dict[str, Any] = {"frames": frames}
    for name, options in video_variants(torch.cuda.is_available()).items():
        if isinstance(options, str):
            runs[name] = options
            rows.append((name, options, None))
            continue
        if time.monotonic() > deadline:
            runs[name] = OVER_BUDGET
            rows.append((name, OVER_BUDGET, None))
            continue
        try:
            result = bench(
                src,
                weights,
                config,
                work / name.replace(" ", "_").replace("+", "_"),
                run_baseline=name == "cpu codecs",
                **options,
            )
        except Exception as e:  # one codec path failing is a finding; the others still run
            runs[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            rows.append((name, runs[name]["error"].splitlines()[0], False))
            continue
        runs[name] = result
        ours = result["ours"]
        stages = ", ".join(f"{k} {v:.2f}" for k, v in ours["stages"].items())
        util = ours["gpu_utilisation"]
        gpu = f"; GPU {util['mean_pct']:.0f}% mean" if "mean_pct" in util else ""
        rows.append((f"{name}: ours", f"{ours['fps']:.1f} fps ({ours['codec']}); s: {stages}{gpu}", True))
        if "baseline" in result:
            base = result["baseline"]
            stages = ", ".join(f"{k} {v:.2f}" for k, v in base["stages"].items())
            rows.append((f"{name}: per-frame official", f"{base['fps']:.1f} fps; s: {stages}", None))
            rows.append((f"{name}: speed-up", f"{result['speedup']:.2f}x", None))
    return rows, runs


# --- step 5: a second GPU --------------------------------------------------------------------------------


def step_cuda1(plan: Plan, deadline: float) -> tuple[list[Row], dict]:
    import torch

    from benchmarks.bench_kernels import random_model, rel_err
    from benchmarks.bench_video import bench
    from vidrestore import kernels

    if torch.cuda.device_count() < 2:
        raise Skip(f"{torch.cuda.device_count()} CUDA device(s): cuda:1 needs two")
    model = random_model(plan.config())
    kernels.set_kernel_impl(model, "triton")
    size = model.config.out_size
    x = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.cuda.device(0), torch.no_grad():  # device 0 current: the launches must follow the tensors
        out0 = model.to("cuda:0", torch.bfloat16)(x.to("cuda:0", torch.bfloat16))
        out1 = model.to("cuda:1")(x.to("cuda:1", torch.bfloat16))
        torch.cuda.synchronize(1)
    error = rel_err(out1.cpu(), out0.cpu())
    rows: list[Row] = [("model bf16 on cuda:1 vs cuda:0", f"rel {error:.1e}", error < 1e-3)]
    data: dict[str, Any] = {"model_rel_err": error}
    video = plan.work / "video"
    if (video / "clip_1080p.mp4").exists() and time.monotonic() < deadline:
        result = bench(
            video / "clip_1080p.mp4",
            video / "weights.pth",
            plan.config(),
            video / "cuda1",
            run_baseline=False,
            device="cuda:1",
        )
        data["video"] = result
        rows.append(
            (
                "video job on cuda:1",
                f"{result['ours']['fps']:.1f} fps on {result['device']}",
                result["device"] == "cuda:1",
            )
        )
    return rows, data


STEPS = [
    Step("tests", "1 CUDA-only tests", step_tests),
    Step("parity", "2 parity", step_parity),
    Step("throughput", "3 faces/s", step_throughput),
    Step("video", "4 video 1080p", step_video),
    Step("cuda1", "5 cuda:1", step_cuda1),
]


def run_steps(steps: list[Step], plan: Plan) -> list[Outcome]:
    """Each step in turn inside its own try block and budget; one failing never stops the next."""
    outcomes = []
    for step in steps:
        budget = plan.budgets[step.key]
        start = time.monotonic()
        print(f"--- {step.title} (budget {budget:.0f} s)", flush=True)
        outcome = Outcome(step.key, step.title, "ok", 0.0, budget)
        try:
            outcome.rows, outcome.data = step.run(plan, start + budget)
            if any(ok is False for _, _, ok in outcome.rows):
                outcome.status = "failed"
            elif any(result == OVER_BUDGET for _, result, _ in outcome.rows):
                outcome.status = "partial"
        except Skip as e:
            outcome.status, outcome.rows = "skipped", [("", str(e), None)]
        except Exception as e:
            outcome.status, outcome.error = "error", f"{type(e).__name__}: {e}"
            outcome.data = {"traceback": traceback.format_exc()}
            outcome.rows = [("", outcome.error.splitlines()[0][:200], False)]
            print(outcome.data["traceback"], file=sys.stderr, flush=True)
        outcome.seconds = time.monotonic() - start
        outcomes.append(outcome)
    return outcomes


def table(outcomes: list[Outcome]) -> str:
    lines = [f"{'step':18} {'status':8} {'s/budget':>10}  {'item':40} result"]
    for o in outcomes:
        head = f"{o.title:18} {o.status:8} {o.seconds:>5.0f}/{o.budget:<4.0f}"
        for i, (item, result, ok) in enumerate(o.rows or [("", "", None)]):
            mark = {True: "", False: "  <-- FAIL", None: ""}[ok]
            lines.append(f"{head if i == 0 else '':38}  {item:40} {result}{mark}")
    return "\n".join(lines)


def environment(plan: Plan) -> dict:
    import torch

    from benchmarks.bench_kernels import environment as gpu_environment
    from benchmarks.bench_model import cpu_name
    from vidrestore.pipeline import versions

    return {
        **gpu_environment(),
        "gpu_capability": list(torch.cuda.get_device_capability()) if torch.cuda.is_available() else None,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET"),
        "versions": versions(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu-smoke", action="store_true", help="the same plan on the CPU, tiny model")
    parser.add_argument("--dry-run", action="store_true", help="print and write the plan, run nothing")
    parser.add_argument("--steps", nargs="+", choices=[s.key for s in STEPS], help="a subset (default: all)")
    parser.add_argument("--out", type=Path, default=Path("bench-out/gpu_check.json"))
    parser.add_argument("--work", type=Path, default=Path("bench-out/gpu_check"))
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before any Triton function is defined: no import above does
    plan = Plan.make(args.cpu_smoke, args.work.resolve())
    steps = [s for s in STEPS if args.steps is None or s.key in args.steps]
    report: dict[str, Any] = {
        "benchmark": "gpu_check" + (" --cpu-smoke" if plan.smoke else ""),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "plan": {**{k: str(v) for k, v in vars(plan).items()}, "steps": [s.key for s in steps]},
    }
    if args.dry_run:
        for s in steps:
            print(f"{s.title:18} budget {plan.budgets[s.key]:>4.0f} s")
        print(f"device {plan.device}, batches {plan.batches}, clip {plan.clip_seconds} s")
    else:
        if not plan.smoke:
            import torch

            if not torch.cuda.is_available():
                print(
                    "gpu_check needs a CUDA GPU and none is visible; --cpu-smoke runs its plan on the CPU",
                    file=sys.stderr,
                )
                return 2
        plan.work.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        report["environment"] = environment(plan)
        outcomes = run_steps(steps, plan)
        report["seconds"] = time.monotonic() - start
        report["steps"] = {o.key: {k: v for k, v in vars(o).items() if k != "key"} for o in outcomes}
        print("\n" + table(outcomes))
        print(f"total {report['seconds']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    failed = [k for k, v in report.get("steps", {}).items() if v["status"] in ("failed", "error")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Every model of the registry: parameters, GFLOP per face, CPU seconds per face, and parity with its fixture.

Each network is built at full size through its registry loader, from a checkpoint written the way the release
is. The weights are those of its golden fixture, made by the recipe of its tests (the helpers of
``tests/test_model_<name>.py``, imported, not copied), so the parity error is measured against the official
outputs stored in ``tests/fixtures/``; GFP-GAN has no fixture and is compared with the official
architecture (``benchmarks/official.py``) on the same random weights. A model the script has no recipe for
(one added since) is built with random weights from its fixture's ``layout.json`` and timed without a parity
figure.

Random weights cost what the released ones do (same layout, same FLOPs). One face at a time, fp32, the
controls the engine passes by default (CodeFormer at w = 0, so its fusion layers do not run). GFLOP counts a
multiply-add as 2 (``torch.utils.flop_counter``). Where CUDA is available, faces/s in fp16 and bf16 at
``--gpu-batch`` are measured too.

    python -m benchmarks.bench_models [--models NAME ...] [--runs 3] [--update-speeds]

``--update-speeds`` writes the CPU seconds per face into ``vidrestore/models/speeds.json``, which
``vidrestore models`` lists.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.bench_model import cpu_name
from vidrestore.models import MODELS, ModelSpec
from vidrestore.models.speeds import Speeds, write_speeds
from vidrestore.options import EngineOptions

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
GPU_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

type Parity = Callable[[nn.Module], float]  # max |ours - official| over the fixture's stored outputs


@dataclass
class Built:
    model: nn.Module
    parity: Parity | None
    reference: str  # what the parity error is measured against


def _tests(name: str) -> ModuleType:
    """A module of tests/, for its fixture helpers (test modules import their siblings as top-level names)."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    return importlib.import_module(name)


def _fixture_input() -> torch.Tensor:
    """The golden fixtures' 512 px input: seed 99, uniform in [-1, 1]."""
    return torch.rand((1, 3, 512, 512), generator=torch.Generator().manual_seed(99)) * 2 - 1


def _load(spec: ModelSpec, path: Path, **extra: object) -> nn.Module:
    return spec.load(path, device="cpu", dtype=torch.float32, config=None, **extra)


def _max_error(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    return max((ours - official).abs().max().item() for ours, official in pairs)


def _gfpgan_clean(spec: ModelSpec, folder: Path) -> Built:
    from benchmarks.official import official_gfpgan
    from vidrestore.models.gfpgan import GFPGANConfig

    state = _tests("test_model")._random_state(GFPGANConfig())
    path = folder / "gfpgan.pth"
    torch.save({"params_ema": state}, path)

    def parity(model: nn.Module) -> float:
        official = official_gfpgan(GFPGANConfig()).requires_grad_(False)
        official.load_state_dict(state, strict=True)
        x = _fixture_input()
        with torch.inference_mode():
            expected = official(x, return_rgb=False, randomize_noise=False)[0]
            return _max_error([(model(x), expected)])

    return Built(_load(spec, path), parity, "official architecture, same random weights")


def _psfrgan(spec: ModelSpec, folder: Path) -> Built:
    t = _tests("test_model_psfrgan")
    layout = json.loads((t.FIXTURES / "layout.json").read_text())
    case = torch.load(t.FIXTURES / "case.pt", weights_only=True)
    generator, parser = folder / "psfrgan_epoch15_net_G.pth", folder / "parse_multi_iter_90000.pth"
    torch.save(t.recipe_state(layout["generator"]["state_dict"]), generator)
    torch.save(t.recipe_state(layout["parsenet"]["state_dict"]), parser)

    def parity(model: nn.Module) -> float:
        """The generator's output given the official parse labels (the full forward takes its own)."""
        x = t._case_input(case)
        onehot = torch.nn.functional.one_hot(case["parse_labels"].long(), 19).permute(0, 3, 1, 2).float()
        with torch.inference_mode():
            out = model.generator(x, onehot)
        return _max_error([(out[:, :, ::4, ::4], case["generator_stride4"])])

    return Built(_load(spec, generator, extra=(parser,)), parity, "tests/fixtures/psfrgan")


def _pfsr(spec: ModelSpec, folder: Path) -> Built:
    t = _tests("test_model_pfsr")
    layout = json.loads((t.FIXTURE / "layout.json").read_text())
    case = torch.load(t.FIXTURE / "case.pt", weights_only=True)
    g = torch.Generator().manual_seed(1234)
    state = {entry["name"]: t._recipe_tensor(entry, g) for entry in layout["state_dict"]}
    path = folder / "generator_checkpoint_singleGPU.ckpt"
    torch.save({"model_state_dict": state, "step": 3, "alpha": 1.0, "iteration": 0}, path)

    def parity(model: nn.Module) -> float:
        pairs = []
        with torch.inference_mode():
            for name, call in case["cases"].items():
                out = model(case["input"], step=call["step"], alpha=call["alpha"])
                expected = case["output"].get(name)
                if expected is None:  # the fixture stores some outputs in part
                    expected = case["output_rows"][name]
                    out = out[:, :, : expected.shape[2]]
                pairs.append((out, expected))
        return _max_error(pairs)

    return Built(_load(spec, path), parity, "tests/fixtures/pfsr")


def _restoreformer(spec: ModelSpec, folder: Path) -> Built:
    t = _tests("test_model_restoreformer")
    fixture = t.FIXTURES / t.FIXTURE_DIRS[spec.name]
    case = torch.load(fixture / "case.pt", weights_only=True)
    state = t._recipe(json.loads((fixture / "layout.json").read_text())["state_dict"])
    path = folder / "restoreformer.ckpt"
    torch.save(t._released(spec.name, state), path)

    def parity(model: nn.Module) -> float:
        with torch.inference_mode():
            out = model(_fixture_input())
        return _max_error([(out[:, :, ::4, ::4], case["output_stride4"])])

    return Built(_load(spec, path), parity, f"tests/fixtures/{fixture.name}")


def _codeformer(spec: ModelSpec, folder: Path) -> Built:
    t = _tests("test_model_codeformer")
    layout = json.loads((t.FIXTURE / "layout.json").read_text())["state_dict"]
    case = torch.load(t.FIXTURE / "case.pt", weights_only=True)
    g = torch.Generator().manual_seed(1234)
    path = folder / "codeformer.pth"
    torch.save({"params_ema": {entry["name"]: t._recipe_tensor(entry, g) for entry in layout}}, path)

    def parity(model: nn.Module) -> float:
        x = _fixture_input()
        with torch.inference_mode():
            outputs = {w: model(x, w=w)[:, :, ::4, ::4] for w in (0.0, 0.5)}
        return _max_error([(out, case["output_every_4th_pixel"][f"w{w}"]) for w, out in outputs.items()])

    return Built(_load(spec, path), parity, "tests/fixtures/codeformer (w = 0 and 0.5)")


# The fixture recipe of each architecture of the registry (ModelSpec.arch).
RECIPES: dict[str, Callable[[ModelSpec, Path], Built]] = {
    "GFPGANv1Clean": _gfpgan_clean,
    "PSFRGenerator + ParseNet": _psfrgan,
    "PFSRGenerator": _pfsr,
    "RestoreFormer": _restoreformer,
    "VQVAEGANMultiHeadTransformer": _restoreformer,
    "CodeFormer": _codeformer,
}


def fixture_dir(spec: ModelSpec) -> Path:
    """Where a model's golden fixture lives: its name without dashes, '++' spelled '_plusplus'."""
    return TESTS / "fixtures" / spec.name.replace("-", "").replace("++", "_plusplus")


def _from_layout(spec: ModelSpec, folder: Path) -> Built | None:
    """Random weights, scaled to keep activations O(1), in the layout of the model's fixture; None if none."""
    layout = fixture_dir(spec) / "layout.json"
    if not layout.exists():
        return None
    g = torch.Generator().manual_seed(0)
    state = {}
    for entry in json.loads(layout.read_text())["state_dict"]:
        name, shape, dtype = entry["name"], entry["shape"], getattr(torch, entry["dtype"])
        if not dtype.is_floating_point:
            state[name] = torch.zeros(shape, dtype=dtype)
            continue
        draw = torch.randn(shape, generator=g)
        if len(shape) > 1:
            draw /= math.sqrt(math.prod(shape) // shape[0])
        else:
            draw = 0.1 * draw if name.endswith("bias") else 1 + 0.1 * draw
        state[name] = draw.to(dtype)
    path = folder / "random.pth"
    torch.save(state, path)
    return Built(_load(spec, path), None, f"no recipe for {spec.arch}: random weights, no parity")


def build(spec: ModelSpec, folder: Path) -> Built | None:
    recipe = RECIPES.get(spec.arch)
    return recipe(spec, folder) if recipe else _from_layout(spec, folder)


def engine_controls(spec: ModelSpec) -> dict[str, object]:
    """The keywords the engine passes to the network with default options."""
    options = EngineOptions()
    controls: dict[str, object] = {name: getattr(options, name) for name in spec.controls}
    if spec.fidelity_control:
        controls[spec.fidelity_control] = options.fidelity
    return controls


def sample_faces(spec: ModelSpec, batch: int) -> torch.Tensor:
    low, high = spec.input_range
    x = torch.rand(batch, 3, spec.face_size, spec.face_size, generator=torch.Generator().manual_seed(1))
    return x * (high - low) + low


def measure_cpu(spec: ModelSpec, model: nn.Module, args: argparse.Namespace) -> dict:
    """GFLOP from one counted forward (which is also the warm-up), then timed runs at batch 1.

    Fewer runs than ``--runs`` when the warm-up says they would take over ``--model-seconds``.
    """
    x, controls = sample_faces(spec, 1), engine_controls(spec)
    with torch.inference_mode():
        counter = FlopCounterMode(display=False)
        start = time.perf_counter()
        with counter:
            model(x, **controls)
        counted_s = time.perf_counter() - start
        runs = max(1, min(args.runs, int(args.model_seconds / counted_s)))
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            model(x, **controls)
            times.append(time.perf_counter() - start)
    return {
        "gflop_per_face": counter.get_total_flops() / 1e9,
        "cpu_s_per_face": statistics.median(times),
        "cpu_runs_s": times,
    }


def measure_gpu(spec: ModelSpec, model: nn.Module, args: argparse.Namespace) -> dict[str, float | str]:
    """Faces per second at ``--gpu-batch`` in each half precision; an error's first line where one fails."""
    out: dict[str, float | str] = {}
    x, controls = sample_faces(spec, args.gpu_batch), engine_controls(spec)
    for name, dtype in GPU_DTYPES.items():
        try:
            on_gpu = copy.deepcopy(model).to("cuda", dtype)
            faces = x.to("cuda", dtype)
            with torch.inference_mode():
                for _ in range(2):
                    on_gpu(faces, **controls)
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(args.runs):
                    on_gpu(faces, **controls)
                torch.cuda.synchronize()
            out[f"gpu_{name}_faces_per_s"] = args.gpu_batch * args.runs / (time.perf_counter() - start)
        except RuntimeError as exc:
            out[f"gpu_{name}_faces_per_s"] = f"error: {str(exc).strip().splitlines()[0]}"
        finally:
            torch.cuda.empty_cache()
    return out


def bench(spec: ModelSpec, args: argparse.Namespace, seen: dict[str, dict]) -> dict:
    row: dict = {"model": spec.name, "arch": spec.arch, "licence": spec.licence}
    row["non_commercial"] = spec.non_commercial
    if spec.arch in seen:  # e.g. GFP-GAN v1.3 and v1.4: one network, other weights
        return {**seen[spec.arch], **row, "same_network_as": seen[spec.arch]["model"]}
    row["load_average_before"] = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        built = build(spec, Path(folder))
    if built is None:
        return {**row, "error": f"no recipe for {spec.arch} and no {fixture_dir(spec)}/layout.json"}
    model = built.model
    row["parameters"] = sum(p.numel() for p in model.parameters())
    row.update(measure_cpu(spec, model, args))
    if built.parity is not None and not args.no_parity:
        row["parity_max_abs"] = built.parity(model)
    row["parity_reference"] = built.reference
    if torch.cuda.is_available():
        row.update(measure_gpu(spec, model, args))
    row["load_average_after"] = os.getloadavg()[0]
    seen[spec.arch] = row
    return row


def _fmt(value: object, spec: str) -> str:
    return format(value, spec) if isinstance(value, float | int) else str(value or "-")


def print_table(rows: list[dict]) -> None:
    header = ("model", "params (M)", "GFLOP/face", "CPU s/face", "runs", "parity max|err|", "licence")
    print("\n{:16} {:>10} {:>10} {:>10} {:>4} {:>15}  {}".format(*header))
    for r in rows:
        if "error" in r:
            print(f"{r['model']:16} {r['error']}")
            continue
        print(
            f"{r['model']:16} {r['parameters'] / 1e6:>10.1f} {r['gflop_per_face']:>10.1f} "
            f"{r['cpu_s_per_face']:>10.2f} {len(r['cpu_runs_s']):>4} "
            f"{_fmt(r.get('parity_max_abs'), '.2e'):>15}  {r['licence']}"
        )
        gpu = {k: v for k, v in r.items() if k.startswith("gpu_")}
        if gpu:
            print(f"{'':16} GPU faces/s: " + ", ".join(f"{k}: {_fmt(v, '.1f')}" for k, v in gpu.items()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    today = datetime.date.today().isoformat()
    parser.add_argument("--out", type=Path, default=ROOT / f"benchmarks/results/models_cpu_{today}.json")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs after the warm-up (default 3)")
    parser.add_argument(
        "--model-seconds",
        type=float,
        default=120.0,
        help="fewer timed runs for a model whose runs would take longer than this (at least one)",
    )
    parser.add_argument("--gpu-batch", type=int, default=16, help="faces per batch on CUDA (default 16)")
    parser.add_argument("--no-parity", action="store_true", help="skip the parity forwards")
    parser.add_argument(
        "--update-speeds", action="store_true", help="write CPU s/face into vidrestore/models/speeds.json"
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    seen: dict[str, dict] = {}
    rows = []
    for name in args.models:
        rows.append(bench(MODELS[name], args, seen))
        print(f"{name}: " + json.dumps({k: v for k, v in rows[-1].items() if k != "cpu_runs_s"}), flush=True)
    load_after = os.getloadavg()
    print_table(rows)

    report = {
        "benchmark": "each registry model at full size: parameters, GFLOP/face, CPU s/face (batch 1), parity",
        "date": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.datetime.now(datetime.UTC) - started).total_seconds(), 1),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "cpu": cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average_1_5_15_before": load_before,
        "load_average_1_5_15_after": load_after,
        "runs": args.runs,
        "models": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.update_speeds:
        load = statistics.mean([load_before[0], load_after[0]])
        measured = (
            f"{started.date()} on {report['cpu']}, {report['cpu_threads']} threads, "
            f"torch {torch.__version__}, shared machine at load average {load:.1f} "
            "(python -m benchmarks.bench_models)"
        )
        timed = {r["model"]: round(r["cpu_s_per_face"], 3) for r in rows if "cpu_s_per_face" in r}
        write_speeds(Speeds(timed, measured))
        print("wrote vidrestore/models/speeds.json")


if __name__ == "__main__":
    main()

"""benchmarks/gpu_check.py: its plan, step isolation and refusals, without running the (minutes-long) steps.

The whole smoke run (``python -m benchmarks.gpu_check --cpu-smoke``) takes minutes on the CPU (Triton's
interpreter); BENCHMARKS.md records it. These tests check the parts that decide what it runs and reports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check
from benchmarks.gpu_check import Plan, Skip, Step

ROOT = Path(__file__).resolve().parent.parent


def test_dry_run_writes_the_plan(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--cpu-smoke", "--dry-run", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    plan = json.loads(out.read_text())["plan"]
    assert plan["steps"] == ["tests", "parity", "throughput", "video", "cuda1"]
    assert plan["smoke"] == "True"
    assert "5 cuda:1" in done.stdout


def test_gpu_plan_fits_eight_minutes() -> None:
    plan = Plan.make(smoke=False, work=Path("unused"))
    assert sum(plan.budgets.values()) < 8 * 60
    assert plan.batches == [1, 8, 16, 32, 64]


def test_a_failing_step_does_not_stop_the_rest(tmp_path: Path) -> None:
    def boom(plan: Plan, deadline: float) -> tuple[list, dict]:
        raise RuntimeError("kernel exploded\nsecond line")

    def skip(plan: Plan, deadline: float) -> tuple[list, dict]:
        raise Skip("1 CUDA device(s)")

    def mixed(plan: Plan, deadline: float) -> tuple[list, dict]:
        return [("a", "1.0", True), ("b", "2.0", False)], {"x": 1}

    def fine(plan: Plan, deadline: float) -> tuple[list, dict]:
        return [("c", "3.0", None)], {}

    def cut(plan: Plan, deadline: float) -> tuple[list, dict]:
        return [("d", "4.0", True), ("e", gpu_check.OVER_BUDGET, None)], {}

    steps = [Step("tests", "1 a", boom), Step("parity", "2 b", skip)]
    steps += [Step("throughput", "3 c", mixed), Step("video", "4 d", fine), Step("cuda1", "5 e", cut)]
    outcomes = gpu_check.run_steps(steps, Plan.make(smoke=True, work=tmp_path))
    assert [o.status for o in outcomes] == ["error", "skipped", "failed", "ok", "partial"]
    assert outcomes[0].error == "RuntimeError: kernel exploded\nsecond line"
    assert "Traceback" in outcomes[0].data["traceback"]
    table = gpu_check.table(outcomes)
    assert "RuntimeError: kernel exploded" in table and "second line" not in table
    assert table.count("<-- FAIL") == 2


def test_nvenc_and_nvdec_not_available_without_cuda() -> None:
    variants = gpu_check.video_variants(cuda=False)
    assert variants["cpu codecs"] == {}
    assert variants["nvenc"].startswith("not available: no CUDA device")
    assert variants["nvdec+nvenc"].startswith("not available: no CUDA device")


def test_without_a_gpu_the_full_check_refuses_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "r.json"), "--work", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--cpu-smoke" in err

"""The GPU check's machinery, on the CPU with stand-in steps: figures kept as they are
measured, a failing or hanging step recorded while the next runs, a rerun that continues.
(The real steps run in ``python benchmarks/gpu_check.py --smoke --device cpu``: minutes.)"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks/gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _figures(out: Path) -> dict:
    return json.loads((out / "figures.json").read_text())


def test_a_failing_step_keeps_its_rows_and_the_next_step_runs(gpu_check, tmp_path):
    figures = gpu_check.Figures(tmp_path, {"device_name": "test"})

    def half_done(rows):
        rows.append({"batch": 1, "images_per_s": 10.0})
        # on disk before the step ends: a machine taken back mid-step keeps it
        assert _figures(tmp_path)["steps"]["first"]["rows"] == [{"batch": 1, "images_per_s": 10.0}]
        raise RuntimeError("CUDA out of memory")

    figures.step("first", half_done, timeout=30)
    figures.step("second", lambda rows: {"ok": 1}, timeout=30)
    steps = _figures(tmp_path)["steps"]
    assert steps["first"]["failed"] and "CUDA out of memory" in steps["first"]["error"]
    assert steps["first"]["rows"] == [{"batch": 1, "images_per_s": 10.0}]
    assert steps["second"]["result"] == {"ok": 1} and not steps["second"].get("failed")
    assert "## first" in (tmp_path / "figures.md").read_text()


def test_a_hanging_step_is_stopped_by_its_timeout(gpu_check, tmp_path):
    figures = gpu_check.Figures(tmp_path, {})

    def hangs(rows):
        rows.append({"measured": True})
        time.sleep(60)

    def retries(rows):  # a step (or a library) that catches Exception and tries again
        for _ in range(60):
            try:
                time.sleep(1)
            except Exception:  # noqa: BLE001, S112
                continue

    handler = signal.getsignal(signal.SIGALRM)
    signal.setitimer(signal.ITIMER_REAL, 600)  # a timer set outside (pytest-timeout's)
    try:
        figures.step("hangs", hangs, timeout=1)
        figures.step("retries", retries, timeout=0.5)
        outer = signal.getitimer(signal.ITIMER_REAL)[0]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    steps = _figures(tmp_path)["steps"]
    assert (
        steps["hangs"]["failed"] and steps["hangs"]["error"] == "StepTimeout: timed out after 1 s"
    )
    assert steps["hangs"]["rows"] == [{"measured": True}]
    assert steps["retries"]["failed"] and "timed out after 0.5 s" in steps["retries"]["error"]
    assert 500 < outer < 600  # put back, less the steps' time
    assert signal.getsignal(signal.SIGALRM) == handler


def test_ctrl_c_stops_the_check_instead_of_being_recorded(gpu_check, tmp_path):
    def interrupted(rows):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        gpu_check.Figures(tmp_path, {}).step("step", interrupted, timeout=30)
    left = signal.getitimer(signal.ITIMER_REAL)[0]  # 0, or pytest-timeout's own timer
    assert not 0 < left <= 30  # the step's timer is not left running


def test_a_command_that_fails_or_hangs_names_its_log(gpu_check, tmp_path):
    (tmp_path / "logs").mkdir()
    with pytest.raises(RuntimeError, match=r"roadseg predict exited 2 \(.*logs/bad\.log\)"):
        gpu_check.roadseg(tmp_path, "bad", "predict", "--no-such-option", timeout=120)
    assert "$ roadseg predict --no-such-option" in (tmp_path / "logs/bad.log").read_text()
    with pytest.raises(gpu_check.StepTimeout, match=r"timed out after 0 s \(.*slow\.log\)"):
        gpu_check.roadseg(tmp_path, "slow", "predict", "--help", timeout=0.01)


def test_a_rerun_continues_where_the_last_one_stopped(gpu_check, tmp_path, monkeypatch):
    calls = []
    state = {"flaky fails": True}

    def steady(args, rows):
        calls.append("steady")
        rows.append({"x": 1})
        return {"value": 1}

    def flaky(args, rows):
        calls.append("flaky")
        if state["flaky fails"]:
            raise RuntimeError("driver hiccup")
        return {"value": 2}

    monkeypatch.setattr(gpu_check, "STEPS", {"steady": steady, "flaky": flaky})
    monkeypatch.setattr(gpu_check, "TIMEOUTS", {"steady": 30, "flaky": 30})
    argv = ["gpu_check.py", "--out", str(tmp_path), "--device", "cpu"]

    def run(*extra: str) -> int:
        monkeypatch.setattr(sys, "argv", argv + list(extra))
        with pytest.raises(SystemExit) as exit_:
            gpu_check.main()
        return exit_.value.code

    assert run() == 1 and calls == ["steady", "flaky"]
    state["flaky fails"] = False
    assert run() == 0 and calls == ["steady", "flaky", "flaky"]  # only the failed step again
    steps = _figures(tmp_path)["steps"]
    assert steps["steady"]["result"] == {"value": 1} and steps["flaky"]["result"] == {"value": 2}
    assert run("--redo", "steady") == 0 and calls[-1] == "steady" and len(calls) == 4
    # a step killed mid-way (the machine taken back), or failed in an early layout of the
    # file, is measured again; a skipped one is not, though it is due
    figures = _figures(tmp_path)
    figures["steps"]["flaky"] = {"rows": [], "running": True}
    figures["steps"]["steady"] = {"rows": [], "result": {"error": "RuntimeError: old layout"}}
    (tmp_path / "figures.json").write_text(json.dumps(figures))
    assert run("--skip", "steady") == 0 and calls[-1] == "flaky" and len(calls) == 5
    assert run() == 0 and calls[-1] == "steady" and len(calls) == 6
    # a smoke run into the same folder would reuse these figures and checkpoints: refused
    with pytest.raises(SystemExit, match="holds figures of a run with smoke False, not True"):
        gpu_check.Figures(tmp_path, {"smoke": True, "device": "cpu"})
    # a file that cannot be continued is kept aside, not lost
    (tmp_path / "figures.json").write_text('{"meta": {}, "steps": [')
    assert run() == 0 and len(calls) == 8
    (aside,) = tmp_path.glob("figures.unreadable-*.json")
    assert aside.read_text() == '{"meta": {}, "steps": ['


def test_without_a_gpu_the_gpu_command_says_so_in_one_line(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # as on a machine without one
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "gpu_check: no usable CUDA device here (run it where a GPU is, or --device cpu --smoke "
        "to rehearse the steps)"
    ]
    assert not (tmp_path / "figures.json").exists()

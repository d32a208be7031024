"""The GPU check's machinery, on the CPU with stand-in steps: figures kept as they are
measured, a failing or hanging step recorded while the next runs, a rerun that continues.
(The real steps run in ``python benchmarks/gpu_check.py --smoke --device cpu``: minutes.)"""

from __future__ import annotations

import importlib.util
import json
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

    figures.step("hangs", hangs, timeout=1)
    step = _figures(tmp_path)["steps"]["hangs"]
    assert step["failed"] and step["error"] == "StepTimeout: timed out after 1 s"
    assert step["rows"] == [{"measured": True}]


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
    # a step killed mid-way (the machine taken back) is measured again
    figures = _figures(tmp_path)
    figures["steps"]["flaky"] = {"rows": [], "running": True}
    (tmp_path / "figures.json").write_text(json.dumps(figures))
    assert run("--skip", "steady") == 0 and calls[-1] == "flaky" and len(calls) == 5


def test_without_a_gpu_the_gpu_command_says_so_in_one_line(tmp_path):
    # the suite hides CUDA (conftest), as on a machine without one
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "gpu_check: no usable CUDA device here (run it where a GPU is, or --device cpu --smoke "
        "to rehearse the steps)"
    ]
    assert not (tmp_path / "figures.json").exists()

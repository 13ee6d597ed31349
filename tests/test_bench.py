"""benchmarks/bench_step.py runs end to end in its quick mode and writes a complete JSON report."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_step.py"


def test_bench_step_quick_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    # A subprocess, as a user runs it; -W error so a warning fails here as it would in the suite.
    proc = subprocess.run([sys.executable, "-W", "error", str(SCRIPT), "--quick", "--json",
                           str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "nn step" in proc.stdout and "nn/floor" in proc.stdout

    result = json.loads(out.read_text())
    assert set(result) >= {"config", "environment", "times", "ratios", "targets", "load",
                           "first_loss", "not_float32"}
    assert result["config"]["batch"] == 33 and result["config"]["repeats"] == 2
    env = result["environment"]
    assert env["cpu_count"] >= 1 and env["numpy"]
    assert "OPENBLAS_CORETYPE" in env and isinstance(env["nn_blas_gemm"], bool)

    times = result["times"]
    for key in ["nn_step", "nn_forward", "nn_backward", "nn_update", "nn_textbook_step",
                "nn_textbook_forward", "nn_textbook_backward", "nn_textbook_update",
                "floor", "floor_xw", "floor_xtdy"]:
        t = times[key]
        assert 0 < t["min_ms"] <= t["median_ms"] <= t["max_ms"], key
        assert len(t["samples_ms"]) == 2
    assert result["ratios"]["nn/floor"] > 0 and result["ratios"]["nn_textbook/floor"] > 0
    assert result["not_float32"] == [], result["not_float32"]
    # the two nn loops start from the same weights and batch: the same first loss
    assert abs(result["first_loss"]["nn"] - result["first_loss"]["nn_textbook"]) < 1e-6

    if env["torch"] is None:
        assert "torch_step" not in times and result["ratios"]["nn/torch"] is None
    else:
        assert times["torch_step"]["median_ms"] > 0 and result["ratios"]["nn/torch"] > 0
        assert times["torch_in_backward_step"]["median_ms"] > 0
        # Same weights, same batch: the first losses of all four agree.
        losses = result["first_loss"]
        assert set(losses) == {"nn", "nn_textbook", "torch", "torch_in_backward"}
        assert max(losses.values()) - min(losses.values()) < 1e-5


def test_bench_load_runs_on_a_small_folder(tmp_path):
    from conftest import make_poster_folder
    data = make_poster_folder(tmp_path / "posters", n=12, seed=0)
    out = tmp_path / "load.json"
    script = SCRIPT.with_name("bench_load.py")
    proc = subprocess.run([sys.executable, "-W", "error", str(script), "--data", str(data),
                           "--size", "32", "--json", str(out)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "NN_CACHE_DIR": str(tmp_path / "c")})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["posters"] == 12   # the default: every poster of the folder
    for key in ["decode_1_worker_per_s", "decode_all_cores_per_s", "cached_reload_per_s",
                "cached_reload_hashing_per_s", "to_float_buffer_batches_per_s"]:
        assert result[key] > 0, key

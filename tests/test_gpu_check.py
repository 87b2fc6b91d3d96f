"""`make gpu-check`'s CPU side: its arguments, its results file and its one line where there is no CUDA."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from benchmarks import gpu_check


def test_bad_arguments_are_one_line_and_exit_2(tmp_path):
    for argv, words in ((["--steps", "0"], "--steps must be at least 1"),
                        (["--out", str(tmp_path / "x.txt")], "--out must name a .json file"),
                        (["--out", str(tmp_path / "no" / "x.json")], "does not exist")):
        done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", *argv], capture_output=True, text=True)
        assert done.returncode == 2 and words in done.stderr, done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run")
def test_without_cuda_it_says_so_in_one_line_writes_nothing_and_exits_3(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--out", str(out)], capture_output=True,
                          text=True)
    assert done.returncode == gpu_check.NO_CUDA
    assert done.stderr.strip().splitlines() == [gpu_check.no_cuda_message()] and "no CUDA device" in done.stderr
    assert not out.exists()


def test_the_results_file_is_written_whole_with_every_key_or_not_at_all(tmp_path):
    out = tmp_path / "gpu.json"
    results = {k: None for k in gpu_check.SCHEMA}
    results.update(gpu="NVIDIA H100", checks=[{"command": "python -m stages prepare", "ok": True}], bench=[])
    gpu_check.write_results(out, results)
    assert list(json.loads(out.read_text())) == list(gpu_check.SCHEMA)
    with pytest.raises(ValueError, match="driver"):
        gpu_check.write_results(tmp_path / "half.json", {k: v for k, v in results.items() if k != "driver"})
    assert not (tmp_path / "half.json").exists() and not list(tmp_path.glob("*.tmp"))


def test_the_gpu_copy_trains_one_model_a_family_on_cuda(tmp_path):
    import yaml

    repo = gpu_check.study_copy(tmp_path)
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    assert raw["device"] == "cuda" and raw["tracking"]["log_model"] == "none"
    assert set(gpu_check.FAMILY_MODELS.values()) | set(gpu_check.BENCH_MODELS) == {
        n for b in gpu_check.FAMILY_MODELS for n in raw[b]}
    assert not yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["evaluator"].get("frozen")

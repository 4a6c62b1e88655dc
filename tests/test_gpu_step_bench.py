"""benchmarks/gpu_step.py: its parameter and FLOP accounting, and its CPU --smoke run."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_step.py"
_spec = importlib.util.spec_from_file_location("gpu_step", SCRIPT)
gpu_step = importlib.util.module_from_spec(_spec)
sys.modules["gpu_step"] = gpu_step  # dataclasses look their module up there
_spec.loader.exec_module(gpu_step)


def test_parameter_count_of_the_1b_shape_by_hand_and_by_transformers():
    """d=2048, 16 layers, 32 heads (head_dim 64), 8 kv heads, intermediate 8192, V=32000:
    per layer q 2048² + k, v 2·2048·512 + o 2048² + mlp 3·2048·8192 + norms 2·2048
      = 4,194,304 + 2,097,152 + 4,194,304 + 50,331,648 + 4,096 = 60,821,504;
    total = 2 · 32000 · 2048 (embedding, untied head) + 16 · 60,821,504 + 2048 (final norm)
      = 131,072,000 + 973,144,064 + 2,048 = 1,104,218,112."""
    from transformers import LlamaForCausalLM

    counts = gpu_step.parameter_count(gpu_step.SHAPE_1B)
    assert counts["per_layer"] == 60_821_504
    assert counts["total"] == 1_104_218_112
    assert counts["matmul"] == 1_104_218_112 - 65_536_000
    for shape in (gpu_step.SHAPE_1B, gpu_step.SHAPE_SMOKE):
        with torch.device("meta"):  # shapes only, no memory
            model = LlamaForCausalLM(shape.llama_config(128))
        assert model.num_parameters() == gpu_step.parameter_count(shape)["total"]


def test_step_flops_by_hand():
    """Smoke shape: N_matmul = 106,816 - 256·64 = 90,432; L·d·T = 2·64·32 = 4,096;
    tokens 128: train 6·90,432·128 + 12·4,096·128 = 69,451,776 + 6,291,456 = 75,743,232;
    reference forward 2·90,432·128 + 4·4,096·128 = 23,150,592 + 2,097,152 = 25,247,744."""
    flops = gpu_step.step_flops(gpu_step.SHAPE_SMOKE, tokens=128, seq_len=32)
    assert flops == {"train": 75_743_232, "reference_forward": 25_247_744}


def test_peak_flops_by_device_name():
    assert gpu_step.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu_step.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert gpu_step.peak_flops("NVIDIA H200") == 989e12
    assert gpu_step.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu_step.peak_flops("Tesla T4") is None


@pytest.mark.slow
@pytest.mark.deepspeed
def test_smoke_run_writes_a_report(tmp_path):
    """The CPU smoke mode: one ZeRO-2 fp32 configuration, flash attention skipped with a
    reason. The reference is the initial policy, so DPO's first loss is -log σ(0) = ln 2."""
    out = tmp_path / "gpu_step.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "device: CPU (smoke mode)" in proc.stdout
    report = json.loads(out.read_text())
    assert report["parameters"] == 106_816 and report["smoke"] is True
    (run,) = report["runs"]
    assert (run["zero"], run["attn"], run["status"]) == (2, "sdpa", "ok")
    assert run["parameters"] == 106_816
    assert run["first_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert run["tokens_per_step"] == 2 * 2 * 32
    assert run["tokens_per_s"] == pytest.approx(128 / run["step_s_mean"])
    assert run["mfu"] is None  # no peak known for a CPU

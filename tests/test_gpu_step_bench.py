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

# What every configuration of the report must hold, per stage: finite numbers > 0. Written
# out here rather than read from the script, so a stage or key dropped there fails here.
STAGE_KEYS = {
    "reference": (
        "tokens", "scored_tokens", "time_s", "tokens_per_s", "flops", "achieved_tflops",
        "mfu", "start_memory_gib", "peak_memory_gib",
    ),
    "train": (
        "tokens", "scored_tokens", "time_s", "step_s_min", "step_s_max", "first_step_s",
        "tokens_per_s", "first_loss", "last_loss", "flops", "achieved_tflops", "mfu",
        "start_memory_gib", "peak_memory_gib",
    ),
    "sampling": (
        "new_tokens", "time_s", "new_tokens_per_s", "prefill_s", "decode_tokens_per_s",
        "flops", "achieved_tflops", "mfu", "start_memory_gib", "peak_memory_gib",
    ),
}  # fmt: skip


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
    shapes = (
        gpu_step.SHAPE_1B,
        gpu_step.SHAPE_REHEARSAL,
        gpu_step.SHAPE_SMOKE,
        gpu_step.SHAPE_SMOKE_REHEARSAL,
    )
    for shape in shapes:
        with torch.device("meta"):  # shapes only, no memory
            model = LlamaForCausalLM(shape.llama_config(128))
        assert model.num_parameters() == gpu_step.parameter_count(shape)["total"]


def test_parameter_count_of_the_rehearsal_shape_by_hand():
    """The same body with Llama-3's V = 128,256 and an untied head (as Llama 3.1 8B):
    total = 2 · 128,256 · 2048 + 16 · 60,821,504 + 2048
      = 525,336,576 + 973,144,064 + 2,048 = 1,498,482,688,
    in matmuls (all but the input embedding) 1,498,482,688 - 262,668,288 = 1,235,814,400."""
    shape = gpu_step.SHAPE_REHEARSAL
    assert (shape.hidden, shape.layers, shape.heads, shape.kv_heads) == (2048, 16, 32, 8)
    assert (shape.intermediate, shape.vocab) == (8192, 128_256)
    counts = gpu_step.parameter_count(shape)
    assert counts["total"] == 1_498_482_688
    assert counts["lm_head"] == 262_668_288
    assert counts["matmul"] == 1_235_814_400
    suite = gpu_step.SUITES["rehearsal"]
    assert (suite.pairs, suite.seq_len, suite.gradient_checkpointing) == (1, 4096, True)
    assert suite.tokens == 8192 and suite.scored_tokens == 2 * (4096 - 512)


def test_step_flops_by_hand():
    """Smoke shape: N_matmul = 106,816 - 256·64 = 90,432; L·d·T = 2·64·32 = 4,096;
    tokens 128: train 6·90,432·128 + 12·4,096·128 = 69,451,776 + 6,291,456 = 75,743,232;
    reference forward 2·90,432·128 + 4·4,096·128 = 23,150,592 + 2,097,152 = 25,247,744.
    With the lm_head (64·256 = 16,384) on 96 scored tokens only, N_body = 74,048:
    forward 2·74,048·128 + 2·16,384·96 + 4·4,096·128
      = 18,956,288 + 3,145,728 + 2,097,152 = 24,199,168, train 3× = 72,597,504."""
    flops = gpu_step.step_flops(gpu_step.SHAPE_SMOKE, tokens=128, seq_len=32)
    assert flops == {"train": 75_743_232, "reference_forward": 25_247_744}
    flops = gpu_step.step_flops(gpu_step.SHAPE_SMOKE, tokens=128, seq_len=32, scored_tokens=96)
    assert flops == {"train": 72_597_504, "reference_forward": 24_199_168}


def test_sampling_flops_by_hand():
    """Smoke shape, one 4-token prompt, 2 new tokens: prefill 4 tokens attending to 4, one
    decode step attending to 5; body on 4 + 1 tokens, head on 2:
    2·74,048·5 + 2·16,384·2 + 4·(2·64)·(16 + 5) = 740,480 + 65,536 + 10,752 = 816,768."""
    assert gpu_step.sampling_flops(gpu_step.SHAPE_SMOKE, (4,), 2) == 816_768
    assert gpu_step.sampling_flops(gpu_step.SHAPE_SMOKE, (4, 4), 2) == 2 * 816_768


def test_the_docstrings_time_estimate_matches_the_flops():
    """The module docstring budgets the GPU run from these FLOPs at 40% of an H100's 989e12:
    rehearsal step 7.2e13 ≈ 0.18 s, reference 2.4e13, prefill 1.7e13; step suite 5.4e13."""
    rehearsal, step = gpu_step.SUITES["rehearsal"], gpu_step.SUITES["step"]
    r = gpu_step.step_flops(rehearsal.shape, rehearsal.tokens, 4096, rehearsal.scored_tokens)
    s = gpu_step.step_flops(step.shape, step.tokens, 1024, step.scored_tokens)
    prefill = gpu_step.sampling_flops(rehearsal.shape, rehearsal.sample_prompt_lens, 1)
    assert round(r["train"] / 1e13, 1) == 7.2 and round(r["reference_forward"] / 1e13, 1) == 2.4
    assert round(prefill / 1e13, 1) == 1.7 and round(s["train"] / 1e13, 1) == 5.4
    assert r["train"] / (0.4 * 989e12) == pytest.approx(0.18, abs=0.005)


def test_peak_flops_by_device_name():
    assert gpu_step.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu_step.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert gpu_step.peak_flops("NVIDIA H200") == 989e12
    assert gpu_step.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu_step.peak_flops("Tesla T4") is None


def _finite_positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
@pytest.mark.deepspeed
def test_smoke_run_reports_every_stage_of_every_configuration(tmp_path):
    """The CPU smoke mode runs both suites (rehearsal: gradient checkpointing on; step: off)
    under ZeRO-2 and ZeRO-3, each through reference scoring, DPO training and sampling;
    flash attention is skipped with a reason. `--peak-tflops 1` makes every MFU a number.
    The reference is the initial policy, so DPO's first loss is -log σ(0) = ln 2."""
    out = tmp_path / "gpu_step.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--peak-tflops", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=1800,  # ~1 min on 2 idle cores; a loaded CI box can take several
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "device: CPU (smoke mode)" in proc.stdout
    report = json.loads(out.read_text())
    assert report["smoke"] is True and report["device_name"] == "CPU (smoke mode)"
    for package in ("torch", "transformers", "deepspeed"):
        assert report["versions"][package]
    assert set(report["suites"]) == {"rehearsal", "step"}
    assert report["suites"]["step"]["parameters"] == 106_816
    assert (
        report["suites"]["rehearsal"]["parameters"]
        == gpu_step.parameter_count(gpu_step.SHAPE_SMOKE_REHEARSAL)["total"]
    )
    assert report["suites"]["rehearsal"]["gradient_checkpointing"] is True

    runs = {(r["suite"], r["zero"], r["attn"]): r for r in report["runs"]}
    expected = {(suite, zero) for suite in ("rehearsal", "step") for zero in (2, 3)}
    assert {(s, z) for s, z, a in runs if a == "sdpa"} == expected
    for (suite_name, zero, attn), run in runs.items():
        where = f"{suite_name} ZeRO-{zero} {attn}"
        if attn == "flash_attention_2":
            assert run["status"] == "skipped" and run["reason"], where
            continue
        assert run["status"] == "ok", (where, run.get("reason"))
        suite = report["suites"][suite_name]
        assert run["parameters"] == suite["parameters"], where
        stages = run["stages"]
        for stage, keys in STAGE_KEYS.items():
            assert stage in stages, f"{where}: stage {stage!r} missing from the report"
            for key in keys:
                assert _finite_positive(stages[stage].get(key)), (where, stage, key, stages[stage])
            assert stages[stage]["peak_memory_gib"] >= stages[stage]["start_memory_gib"], where
        ref, train, sampling = stages["reference"], stages["train"], stages["sampling"]
        tokens = 2 * suite["pairs"] * suite["seq_len"]
        assert ref["tokens"] == train["tokens"] == tokens, where
        assert train["tokens_per_s"] == pytest.approx(tokens / train["time_s"]), where
        assert ref["tokens_per_s"] == pytest.approx(tokens / ref["time_s"]), where
        assert train["mfu"] == pytest.approx(train["flops"] / train["time_s"] / 1e12), where
        assert train["flops"] == suite["train_flops_per_step"], where
        assert train["first_loss"] == pytest.approx(math.log(2), abs=1e-6), where
        assert train["step_s_min"] <= train["time_s"] <= train["step_s_max"], where
        n_prompts = len(suite["sample_prompt_lens"])
        assert sampling["new_tokens"] == n_prompts * suite["new_tokens"], where
        assert sampling["new_tokens_per_s"] == pytest.approx(
            sampling["new_tokens"] / sampling["time_s"]
        ), where
        assert sampling["prefill_s"] < sampling["time_s"], where
        assert sampling["flops"] == suite["sampling_flops"], where

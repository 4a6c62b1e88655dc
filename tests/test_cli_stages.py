"""`raydaa sft` and `raydaa align` from the shell, as a user runs them (own local Ray)."""

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.deepspeed]


def raydaa(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "raydaa.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_sft_base_then_align_from_the_shell(tmp_path):
    """Base-initialized reference (paper RQ1 path, no SFT training), then 2 DPO steps."""
    results = str(tmp_path / "results")
    sft = raydaa("sft", "--base", "--results", results)
    assert sft.returncode == 0, sft.stderr[-3000:]
    assert "reference policy of tiny" in sft.stdout and "dashboard" in sft.stdout
    align = raydaa(
        "align",
        "--method",
        "dpo",
        "--beta",
        "0.1",
        "--lr",
        "1e-4",
        "--max-steps",
        "2",
        "--seed",
        "7",
        "--results",
        results,
    )
    assert align.returncode == 0, align.stderr[-3000:]
    summary = json.loads(align.stdout[align.stdout.index("{") :])
    assert summary["status"] == "stopped" and summary["final"]["step"] == 2
    assert "dpo-b0.1-lr0.0001-s7-" in summary["model"]  # the run carries its own seed


def test_align_without_reference_says_what_to_run(tmp_path):
    out = raydaa(
        "align", "--method", "dpo", "--beta", "0.1", "--lr", "1e-4", "--results", str(tmp_path)
    )
    assert out.returncode != 0
    assert "raydaa sft --scenario tiny" in out.stderr


def test_bad_arguments_are_named():
    out = raydaa("align", "--method", "kto", "--beta", "0.1", "--lr", "1e-4")
    assert out.returncode == 2 and "invalid choice: 'kto'" in out.stderr
    out = raydaa("align", "--method", "dpo", "--beta", "0.1", "--lr", "1e-4", "--seed", "-1")
    assert out.returncode == 2 and "--seed" in out.stderr
    out = raydaa("sft", "--scenario", "nope")
    assert out.returncode == 2 and "unknown scenario 'nope'" in out.stderr

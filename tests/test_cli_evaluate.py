"""`raydaa evaluate`: arguments refused before any model loads, then any checkpoint on
tiny's yardstick (the SFT policy against itself ties at 0.5 with KL 0; the untrained base
model loses to it and is far from it), `--json` and `--name` (a store row of method
external with its per-prompt records). The models are conftest's `tiny_sft`
(200 plain-PyTorch SFT steps, no Ray)."""

from __future__ import annotations

import json

import pytest
import yaml

from raydaa.cli import main as raydaa
from raydaa.config.scenario import search_spaces_dir
from raydaa.evaluate import policy as policy_module
from raydaa.io.prompt_records import read_records
from raydaa.io.results_store import read_store

KEYS = ("quality", "quality_low", "quality_high", "kl", "kl_low", "kl_high", "kl_k3")


@pytest.fixture
def no_compute(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("evaluate_policy ran before the arguments were checked")

    monkeypatch.setattr(policy_module, "evaluate_policy", refuse)


@pytest.fixture
def checkpoint(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")  # never loaded by these tests
    return str(tmp_path / "ckpt")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scenario", "no-such"], "unknown scenario 'no-such'"),
        (["--policy", "/nowhere/model"], "--policy /nowhere/model: expected a model folder"),
        (["--name", "../up"], "--name '../up': expected 1-64 letters"),
        (["--name", "a b"], "--name 'a b': expected"),
        (["--json", "/nowhere/out.json"], "--json /nowhere/out.json: no such folder"),
        (["--reference", "/nowhere/ref"], "reference /nowhere/ref: expected a model folder"),
    ],
)
def test_bad_arguments_are_named_before_any_compute(args, message, checkpoint, tmp_path, no_compute, capsys):
    argv = ["evaluate", "--policy", checkpoint, "--results", str(tmp_path), *args]
    with pytest.raises(SystemExit) as exit_:
        raydaa(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_no_registered_reference_says_what_to_run(checkpoint, tmp_path, no_compute, capsys):
    assert raydaa(["evaluate", "--policy", checkpoint, "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "scenario tiny has no reference policy" in err
    assert "run `raydaa sft --scenario tiny` first, or give --reference PATH" in err


def small_tiny(tmp_path, prompts: int = 64) -> str:
    """tiny with `prompts` evaluation prompts, as tiny_sft's scenario has."""
    data = yaml.safe_load((search_spaces_dir() / "scenarios" / "tiny.yaml").read_text())
    data["generation"]["num_prompts"] = data["judge"]["num_prompts"] = prompts
    path = tmp_path / "tiny-64.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.slow
def test_the_sft_policy_against_itself_ties_and_joins_the_store(tiny_sft, tmp_path, capsys):
    """Default reference: the scenario's registered one. Identical models sample the same
    answers (every verdict a tie) and score the same log-probs (KL exactly 0). Fails if
    --name writes no row or no records, or the row is not the evaluation's."""
    import ray

    _, _, sft = tiny_sft
    results = tmp_path / "results"
    (results / "tiny").mkdir(parents=True)
    (results / "tiny" / "reference.json").write_text(json.dumps({"path": sft, "init": "sft"}))
    out = tmp_path / "sft.json"
    argv = ["evaluate", "--scenario", small_tiny(tmp_path), "--policy", sft,
            "--results", str(results), "--json", str(out), "--name", "sft-self"]  # fmt: skip
    assert raydaa(argv) == 0
    printed = capsys.readouterr().out
    assert "tiny: quality 0.500 [0.500, 0.500], KL 0.000" in printed, printed
    assert "stored as external-sft-self" in printed
    assert not ray.is_initialized()  # plain torch: no Ray started

    metrics = json.loads(out.read_text())
    assert set(KEYS) <= set(metrics) and "records" not in metrics
    assert metrics["quality"] == pytest.approx(0.5, abs=0.05)
    assert abs(metrics["kl"]) < 1e-6 and abs(metrics["kl_k3"]) < 1e-6
    assert metrics["policy"] == sft and metrics["reference"] == sft

    (row,) = read_store(results, "tiny").to_pylist()
    assert row["trial_id"] == "external-sft-self" and row["method"] == "external"
    assert row["status"] == "finished" and row["seed"] is None and row["error"] == ""
    assert row["checkpoint_path"] == sft and row["reference_path"] == sft
    assert all(row[k] == pytest.approx(metrics[k], abs=1e-12) for k in KEYS)
    records = read_records(results, "tiny", "external", "external-sft-self")
    assert records.num_rows == 64
    assert set(records.column("verdict").to_pylist()) == {0.5}
    assert records.column("policy_text").to_pylist() == records.column("baseline_text").to_pylist()


@pytest.mark.slow
def test_the_untrained_base_model_loses_to_sft_and_is_far_from_it(tiny_sft, tmp_path, capsys):
    """An explicit --reference, no store: fails if the judge's answers were swapped (the
    base model would win) or KL measured from the wrong side (k1 negative)."""
    _, base, sft = tiny_sft
    out = tmp_path / "base.json"
    argv = ["evaluate", "--scenario", small_tiny(tmp_path), "--policy", base,
            "--reference", sft, "--results", str(tmp_path / "results"), "--json", str(out)]  # fmt: skip
    assert raydaa(argv) == 0
    metrics = json.loads(out.read_text())
    assert metrics["quality_high"] < 0.5 and metrics["kl_low"] > 0 and metrics["kl_k3"] > 0
    assert read_store(tmp_path / "results", "tiny").num_rows == 0  # no --name: no row

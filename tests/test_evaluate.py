"""KL estimators, win rates and seeded sampling, on hand-made numbers and the tiny model."""

import math

import pytest
import torch

from raydaa.config.evaluation import SamplingConfig
from raydaa.evaluate.generation import render_prompts, sample
from raydaa.evaluate.judges import GoldJudge, build_judge, win_rate
from raydaa.evaluate.kl import completion_logps, kl_estimates, mean_interval


def test_kl_estimators_by_hand():
    """d = log π - log π_ref = (0.5, -0.5, 1.0): k1 = mean d = 1/3;
    k3 = mean(e^{-d} - 1 + d) = ((e^-0.5 - 0.5) + (e^0.5 - 1.5) + (e^-1)) / 3."""
    pi = torch.tensor([-1.0, -3.0, -2.0])
    ref = torch.tensor([-1.5, -2.5, -3.0])
    est = kl_estimates(pi, ref)
    assert est["k1"].mean == pytest.approx(1 / 3)
    expected_k3 = ((math.exp(-0.5) - 0.5) + (math.exp(0.5) - 1.5) + math.exp(-1.0)) / 3
    assert est["k3"].mean == pytest.approx(expected_k3)
    assert est["k1"].low < est["k1"].mean < est["k1"].high


def test_kl_is_zero_for_identical_models_and_k3_never_negative():
    pi = torch.randn(50) * 3
    assert kl_estimates(pi, pi)["k1"].mean == 0.0
    d = torch.linspace(-5, 5, 101)
    assert kl_estimates(d, torch.zeros_like(d))["k3"].low > 0


def test_mean_interval_is_1_96_standard_errors():
    values = torch.tensor([0.0, 1.0, 0.5, 1.0])
    est = mean_interval(values)
    se = values.double().std(unbiased=True).item() / 2
    assert est.mean == pytest.approx(0.625)
    assert est.high - est.mean == pytest.approx(1.96 * se)


def test_win_rate_interval_stays_within_0_and_1():
    nearly_all_lost = win_rate([0.0] * 30 + [1.0])  # normal interval: mean 0.032 ± 0.063
    assert nearly_all_lost.low == 0.0 and 0.032 < nearly_all_lost.high < 0.1
    nearly_all_won = win_rate([1.0] * 30 + [0.0])
    assert nearly_all_won.high == 1.0 and 0.9 < nearly_all_won.low < 0.968
    assert math.isnan(win_rate([1.0]).low)  # one prompt has no interval


def test_win_rate_counts_ties_half():
    assert win_rate([1.0, 0.0, 0.5, 0.5]).mean == 0.5
    assert win_rate([1.0, 1.0, 1.0, 0.5]).mean == pytest.approx(0.875)
    with pytest.raises(ValueError, match="no judgments"):
        win_rate([])


def test_gold_judge_compares_answers():
    judge = build_judge("gold")
    assert isinstance(judge, GoldJudge)
    prompts = ["sort 3 1 2", "reverse 1 2 3", "increment 1 9"]
    out = judge.compare(prompts, ["1 2 3", "3 2 1", "2 1"], ["1 3 2", "3 2 1", "2 0"])
    assert out == [1.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="unknown judge"):
        build_judge("oracle")


def test_sampling_is_seeded_and_logps_match_the_model():
    from raydaa.scenarios import build_tiny_model, build_tiny_tokenizer

    tokenizer, model = build_tiny_tokenizer(), build_tiny_model(seed=0).eval()
    ids = render_prompts(["sort 3 1 2", "reverse 4 0 7 1"], tokenizer, conversational=True)
    config = SamplingConfig(max_new_tokens=6)
    a = sample(model, tokenizer, ids, config, seed=3)
    b = sample(model, tokenizer, ids, config, seed=3)
    assert a.completion_ids == b.completion_ids and len(a.texts) == 2
    c = sample(model, tokenizer, ids, config, seed=4)
    assert c.completion_ids != a.completion_ids
    greedy = sample(model, tokenizer, ids, SamplingConfig(temperature=0, max_new_tokens=6))
    assert all(1 <= len(x) <= 6 for x in greedy.completion_ids)
    # batched, padded scoring equals scoring one sequence alone
    batched = completion_logps(model, a.prompt_ids, a.completion_ids, tokenizer.pad_token_id)
    alone = completion_logps(model, a.prompt_ids[1:], a.completion_ids[1:], tokenizer.pad_token_id)
    assert batched[1].item() == pytest.approx(alone[0].item(), abs=1e-5)


def test_evaluation_leaves_the_reference_fingerprint_unchanged(tmp_path):
    """Baseline samples are cached beside the reference checkpoint, not inside it: the
    reference log-prob cache fingerprints every file in it and would be recomputed."""
    from raydaa.config.scenario import load_scenario
    from raydaa.evaluate.policy import evaluate_policy
    from raydaa.scenarios import build_tiny_model, build_tiny_tokenizer
    from raydaa.train.refcache import checkpoint_fingerprint

    scenario = load_scenario("tiny")
    scenario.generation.num_prompts = scenario.judge.num_prompts = 8
    scenario.generation.max_new_tokens = 6
    reference = tmp_path / "hf"
    build_tiny_model(0).save_pretrained(reference)
    build_tiny_tokenizer().save_pretrained(reference)
    before = checkpoint_fingerprint(reference)
    metrics = evaluate_policy(str(reference), str(reference), scenario)
    assert checkpoint_fingerprint(reference) == before
    assert metrics["quality"] == 0.5 and metrics["kl"] == 0.0  # the reference against itself
    assert (tmp_path / "hf.baseline_samples.json").exists()


@pytest.mark.ray
def test_gpu_scenarios_evaluate_in_a_one_gpu_task_outside_the_trial_group(tmp_path):
    """With resources.use_gpu, a trial's evaluation is a Ray task asking for 1 GPU, scheduled
    outside the trial's placement group (which has no GPU bundle: it would never run
    inside it). Here the "GPU" is a logical one on a CPU-only local Ray; the task still runs
    on the CPU, so the numbers are the CPU path's."""
    import ray
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from raydaa.config.scenario import load_scenario
    from raydaa.scenarios import build_tiny_model, build_tiny_tokenizer
    from raydaa.sweep.trial import evaluate_trial

    scenario = load_scenario("tiny")
    scenario.generation.num_prompts = scenario.judge.num_prompts = 8
    scenario.generation.max_new_tokens = 6
    scenario.resources.use_gpu = True
    reference = tmp_path / "hf"
    build_tiny_model(0).save_pretrained(reference)
    build_tiny_tokenizer().save_pretrained(reference)

    context = ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=True)
    try:
        group = placement_group([{"CPU": 1}])  # like a Tune trial's: no GPU in it
        ray.get(group.ready())
        in_trial = ray.remote(evaluate_trial).options(
            num_cpus=1,
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                group, placement_group_capture_child_tasks=True
            ),
        )
        metrics = ray.get(in_trial.remote(str(reference), str(reference), scenario,
                                          name="dpo-b0.1-lr1e-06-t1"), timeout=300)
        scenario.resources.use_gpu = False  # the CPU path: in the calling process, no GPU
        cpu_metrics = ray.get(in_trial.remote(str(reference), str(reference), scenario))
        # the task carries its trial's name in the dashboard's task views
        from ray.util.state import list_tasks

        named = list_tasks(address=f"http://{context.dashboard_url}",
                           filters=[("name", "=", "evaluate dpo-b0.1-lr1e-06-t1")])
        assert len(named) == 1, named
    finally:
        ray.shutdown()
    assert metrics["quality"] == 0.5 and metrics["kl"] == 0.0
    assert metrics["eval_gpus"] == 1  # Ray reserved the GPU for the evaluation task
    assert cpu_metrics["eval_gpus"] == 0 and cpu_metrics["quality"] == 0.5

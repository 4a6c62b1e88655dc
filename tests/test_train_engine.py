"""The training engine: Ray Train (V2) TorchTrainer driving a real DeepSpeed ZeRO-2 engine
on the CPU accelerator (gloo), with a tiny random-init Llama and a plain causal-LM loss.

Trajectory tests compare per-step losses of runs that must be the same optimisation:
the data order depends only on (seed, global batch) (`BatchPlan`), every sequence has the
same length (no padding), so the mean of per-micro-batch token means equals the global
token mean, and DeepSpeed averages gradients over accumulation steps and ranks. What is
left is fp32 summation order (gloo all-reduce, matmuls of a different batch shape):
observed max |diff| 4.8e-7 on losses ~4 (1.2e-7 relative) over six steps, both for
2 workers vs 1 and for accumulation; the tolerance is rtol=1e-5, atol=1e-6. Resuming
from a checkpoint was observed bit-exact; its tolerance is rtol=1e-6, atol=1e-7.

The first test run on a fresh machine also JIT-builds DeepSpeed's CPU shared-memory
comm op (~1 min, once per environment: raydaa/train/ops.py).
"""

from __future__ import annotations

import math
import os
import sys

import pytest
import ray
import torch

from raydaa.train import (
    BatchPlan,
    TrainSettings,
    build_deepspeed_config,
    lr_factor,
    run_training,
    timeline,
)
from raydaa.train.metrics import StepStats, count_tokens
from raydaa.train.trainer import build_trainer

VOCAB, SEQ_LEN, NUM_EXAMPLES = 64, 16, 64
STEPS = 6
# Peak lr high enough that six steps move the loss visibly (tiny model, random data).
BASE = {"total_steps": STEPS, "global_batch_size": 4, "lr": 1e-3, "seed": 0}
TRAJECTORY_TOL = {"rtol": 1e-5, "atol": 1e-6}
REPORTED_KEYS = {"step", "loss", "token_accuracy", "grad_norm", "lr", "tokens_per_s", "status",
                 "peak_rss_mib"}


def tiny_llama(**load_kwargs):
    """~90k-parameter LlamaForCausalLM (hidden 64, 2 layers, vocab 64), random init.
    `load_kwargs` are the engine's model-loading settings (attn_implementation, dtype)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=SEQ_LEN)
    return AutoModelForCausalLM.from_config(config, **load_kwargs)


def causal_lm_loss(engine, batch):
    """Mean next-token NLL over the batch, input_ids (B, T) -> scalar; plus token accuracy."""
    input_ids = batch["input_ids"]
    logits = engine(input_ids=input_ids).logits[:, :-1]  # (B, T-1, V): predicts tokens 1..T-1
    targets = input_ids[:, 1:]  # (B, T-1)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
    accuracy = (logits.argmax(-1) == targets).float().mean()
    return loss, {"token_accuracy": accuracy}


def random_tokens():
    """NUM_EXAMPLES examples {"input_ids": (SEQ_LEN,)}: each counts up (mod V) from a
    uniformly random start token, so the data is random but there is something to learn
    (next token = this token + 1) and the loss falls within six steps."""
    generator = torch.Generator().manual_seed(1234)
    starts = torch.randint(0, VOCAB, (NUM_EXAMPLES, 1), generator=generator)
    sequences = (starts + torch.arange(SEQ_LEN)) % VOCAB  # (N, SEQ_LEN)
    return [{"input_ids": row} for row in sequences]


def losses(result, steps=None):
    history = result.return_value["history"]
    return torch.tensor([h["loss"] for h in history if steps is None or h["step"] in steps],
                        dtype=torch.float64)


# ---------------------------------------------------------------- Ray + DeepSpeed runs

@pytest.fixture(scope="module", autouse=True)
def _ship_this_module_by_value():
    # pytest imports this file as a top-level module that Ray's workers cannot import:
    # ship the model factory and the loss by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    return str(tmp_path_factory.mktemp("ray_storage"))


def train(storage, name, **overrides):
    settings = TrainSettings(**{**BASE, **overrides})
    return run_training(settings, model_fn=tiny_llama, loss_fn=causal_lm_loss,
                        dataset=random_tokens(), name=name, storage_path=storage)


@pytest.fixture(scope="module")
def reference_run(ray_cluster, storage):
    """1 worker, micro batch 4, no accumulation, checkpoint at step 3 and at the end."""
    return train(storage, "reference", num_workers=1, micro_batch_size=4, checkpoint_every=3)


@pytest.fixture(scope="module")
def two_worker_run(ray_cluster, storage):
    """2 workers x micro batch 2 (ZeRO-2 shards optimizer state over the 2 ranks)."""
    return train(storage, "two_workers", num_workers=2, micro_batch_size=2, checkpoint_every=3)


def integration(test):
    """Marks of the tests that start Ray Train runs with DeepSpeed (select: -m ray)."""
    for mark in (pytest.mark.ray, pytest.mark.deepspeed, pytest.mark.slow):
        test = mark(test)
    return test


@integration
def test_reference_run_trains_and_reports_every_step(reference_run):
    out = reference_run.return_value
    assert out["status"] == "finished"
    history = out["history"]
    assert [h["step"] for h in history] == list(range(1, STEPS + 1))
    for h in history:
        assert REPORTED_KEYS <= set(h), REPORTED_KEYS - set(h)
        assert math.isfinite(h["grad_norm"]) and h["grad_norm"] > 0
        assert h["tokens_per_s"] > 0
        # a Ray worker holding torch, DeepSpeed and a model: well over 100 MiB resident
        assert 100 < h["peak_rss_mib"] < 64 * 1024
        assert h["tokens"] == BASE["global_batch_size"] * SEQ_LEN
        # lr actually used by step s (1-based) follows the schedule of lr_factor.
        expected_lr = BASE["lr"] * lr_factor(h["step"] - 1, total_steps=STEPS, warmup_steps=0)
        assert h["lr"] == pytest.approx(expected_lr)
    assert [h["status"] for h in history] == ["running"] * (STEPS - 1) + ["finished"]
    # Random init: the first loss is ~ln(V); six steps learn part of the +1 rule
    # (observed 4.162 -> 3.899).
    assert history[0]["loss"] == pytest.approx(math.log(VOCAB), abs=0.1)
    assert history[-1]["loss"] < history[0]["loss"] - 0.15


@integration
def test_the_run_says_where_its_time_went(reference_run):
    marks = reference_run.return_value["timeline"]
    order = [timeline.PROCESS_START, timeline.LOOP_START, timeline.TRAINING_START,
             timeline.TRAIN_END, timeline.SAVED]
    assert [marks[m] for m in order] == sorted(marks[m] for m in order), marks
    assert marks[timeline.PROCESS_START] < marks[timeline.LOOP_START]  # imports took time


def test_runs_collect_reports_more_often_than_ray_trains_default(monkeypatch):
    # Ray Train's default (a report collected every 2 s) held every step of a run that
    # reports each step; a value the user set is left alone.
    from raydaa.train import trainer as trainer_module

    monkeypatch.delenv(trainer_module.HEALTH_CHECK_INTERVAL_ENV, raising=False)
    build_trainer(BASE, model_fn=tiny_llama, loss_fn=causal_lm_loss, dataset=[],
                  name="x", storage_path="/tmp/unused")
    assert float(os.environ[trainer_module.HEALTH_CHECK_INTERVAL_ENV]) <= 0.5
    monkeypatch.setenv(trainer_module.HEALTH_CHECK_INTERVAL_ENV, "3")
    build_trainer(BASE, model_fn=tiny_llama, loss_fn=causal_lm_loss, dataset=[],
                  name="x", storage_path="/tmp/unused")
    assert os.environ[trainer_module.HEALTH_CHECK_INTERVAL_ENV] == "3"


@integration
def test_final_checkpoint_has_deepspeed_state_and_hf_export(reference_run):
    """The HF export holds exactly the weights of the DeepSpeed checkpoint's model states."""
    from safetensors.torch import load_file

    checkpoint = reference_run.checkpoint
    assert checkpoint is not None and reference_run.metrics["step"] == STEPS
    with checkpoint.as_directory() as directory:
        ds_states = torch.load(
            os.path.join(directory, "deepspeed", "state", "mp_rank_00_model_states.pt"),
            map_location="cpu", weights_only=False)
        exported = load_file(os.path.join(directory, "hf", "model.safetensors"))
        assert os.path.exists(os.path.join(directory, "hf", "config.json"))
    assert ds_states["step"] == STEPS  # our client state, saved by DeepSpeed
    module = ds_states["module"]
    assert set(exported) <= set(module)
    for name, tensor in exported.items():
        torch.testing.assert_close(tensor, module[name], rtol=0, atol=0)
    # Two checkpoints were reported (step 3 and step 6).
    assert sorted(m["step"] for _, m in reference_run.best_checkpoints) == [3, STEPS]


@integration
def test_two_workers_match_one_worker(reference_run, two_worker_run):
    """ZeRO-2 over 2 gloo ranks (micro 2 each) == 1 rank (micro 4): same global batches."""
    assert two_worker_run.return_value["status"] == "finished"
    torch.testing.assert_close(losses(two_worker_run), losses(reference_run), **TRAJECTORY_TOL)
    grad_norms = [[h["grad_norm"] for h in r.return_value["history"]]
                  for r in (two_worker_run, reference_run)]
    torch.testing.assert_close(torch.tensor(grad_norms[0]), torch.tensor(grad_norms[1]),
                               rtol=1e-4, atol=1e-6)


@integration
def test_gradient_accumulation_matches_larger_micro_batch(reference_run, storage):
    """micro 2 x accum 2 == micro 4 x accum 1. Logged every 2nd step: reports at 2, 4, 6."""
    result = train(storage, "accumulation", num_workers=1, micro_batch_size=2, log_every=2)
    steps = [h["step"] for h in result.return_value["history"]]
    assert steps == [2, 4, 6]
    torch.testing.assert_close(losses(result), losses(reference_run, steps), **TRAJECTORY_TOL)
    # each report counts the tokens since the previous one: the history sums to the run
    history = result.return_value["history"]
    assert sum(h["tokens"] for h in history) == STEPS * BASE["global_batch_size"] * SEQ_LEN


@integration
def test_resume_continues_the_same_trajectory(two_worker_run, storage):
    """A new 2-worker run started from the step-3 checkpoint of the uninterrupted run
    (weights, both ranks' ZeRO optimizer shards, lr scheduler, data position) replays
    its steps 4-6."""
    step3 = next(c for c, m in two_worker_run.best_checkpoints if m["step"] == 3)
    settings = TrainSettings(**{**BASE, "num_workers": 2, "micro_batch_size": 2})
    resumed = run_training(settings, model_fn=tiny_llama, loss_fn=causal_lm_loss,
                           dataset=random_tokens(), name="resumed", storage_path=storage,
                           resume_from=step3)
    history = resumed.return_value["history"]
    assert [h["step"] for h in history] == [4, 5, 6]
    assert resumed.return_value["status"] == "finished"
    # Same ranks, same ops, restored state: equal up to fp32 noise (observed: exact).
    torch.testing.assert_close(losses(resumed), losses(two_worker_run, {4, 5, 6}),
                               rtol=1e-6, atol=1e-7)


@integration
def test_divergence_guard_stops_at_first_non_finite_step(ray_cluster, storage):
    """lr=1e10: the first update puts weights at ~1e10, the next forward overflows fp32
    (attention scores ~1e40) to NaN. The run stops there, reports "diverged" with the step
    and saves no checkpoint. (lr=1e6 is not enough here: the tiny model saturates to a
    finite uniform predictor, loss ln V, grad 0, which is not a non-finite value.)"""
    result = train(storage, "diverge", num_workers=1, micro_batch_size=4, lr=1e10)
    out = result.return_value
    assert out["status"] == "diverged"
    last = out["history"][-1]
    assert last["status"] == "diverged"
    assert last["diverged_step"] == last["step"] == out["step"]
    assert 1 < last["step"] < STEPS  # step 1 is finite; it stops long before the end
    assert not (math.isfinite(last["loss"]) and math.isfinite(last["grad_norm"]))
    assert all(math.isfinite(h["loss"]) for h in out["history"][:-1])
    assert result.checkpoint is None


# ---------------------------------------------------------------- pure parts, no Ray

def test_peak_memory_line_names_each_figure_per_worker():
    from raydaa.train.metrics import peak_memory_mib
    from raydaa.train.stages import peak_memory_line

    own = peak_memory_mib(torch.device("cpu"))  # no process group: this process alone
    assert set(own) == {"peak_rss_mib"} and own["peak_rss_mib"] > 50
    line = peak_memory_line({"peak_rss_mib": 1536.0, "peak_gpu_mib": 40960.0}, {"num_workers": 2})
    assert line == "peak memory per worker: 1.50 GiB resident, 40.00 GiB GPU (max of 2 workers)"
    assert peak_memory_line({}, {"num_workers": 2}) == "peak memory not reported"


def test_deepspeed_config_from_settings():
    settings = TrainSettings(total_steps=100, global_batch_size=32, micro_batch_size=2,
                             num_workers=4, zero_stage=3, bf16=True)
    config = build_deepspeed_config(settings)
    assert config["train_batch_size"] == 32 == 2 * 4 * config["gradient_accumulation_steps"]
    assert config["gradient_accumulation_steps"] == 4
    assert config["gradient_clipping"] == 2.0
    assert config["optimizer"]["params"]["betas"] == [0.9, 0.95]
    assert config["optimizer"]["params"]["weight_decay"] == 0.0
    assert config["bf16"] == {"enabled": True}
    assert config["zero_optimization"]["stage"] == 3
    assert settings.warmup_steps == 3  # 0.03 x 100


def test_deepspeed_overrides_merge_deeply():
    settings = TrainSettings(total_steps=10, global_batch_size=2, deepspeed_overrides={
        "zero_optimization": {"offload_optimizer": {"device": "cpu"}}})
    zero = build_deepspeed_config(settings)["zero_optimization"]
    assert zero == {"stage": 2, "offload_optimizer": {"device": "cpu"}}


def test_indivisible_global_batch_is_a_clear_error():
    with pytest.raises(ValueError, match="not divisible by micro_batch_size"):
        TrainSettings(total_steps=10, global_batch_size=10, micro_batch_size=4, num_workers=1)
    with pytest.raises(ValueError, match=r"multiple of 6"):
        TrainSettings(total_steps=10, global_batch_size=8, micro_batch_size=3, num_workers=2)


def test_settings_from_dict_rejects_unknown_keys():
    assert TrainSettings.coerce({"total_steps": 5, "global_batch_size": 2}).grad_accum_steps == 2
    with pytest.raises(ValueError, match="unknown training settings: \\['lr_typo'\\]"):
        TrainSettings.coerce({"total_steps": 5, "global_batch_size": 2, "lr_typo": 1.0})


def test_lr_schedule_is_linear_warmup_then_linear_decay():
    """total 100, warmup 3: 1/4, 2/4, 3/4, then 1 at step 3 decaying by 1/97 per step."""
    factors = [lr_factor(s, total_steps=100, warmup_steps=3) for s in range(100)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[50] == pytest.approx(50 / 97)
    assert factors[-1] == pytest.approx(1 / 97) and min(factors) > 0


@pytest.mark.parametrize("world,micro", [(1, 8), (1, 2), (2, 4), (2, 1), (4, 2)])
def test_batch_plan_global_batches_do_not_depend_on_the_split(world, micro):
    """Whatever (workers, micro, accum), step t covers the same 8 examples; epochs
    reshuffle; the 3 tail examples of 35 are dropped each epoch."""
    def step_sets(world, micro):
        accum = 8 // (world * micro)
        plans = [BatchPlan(35, global_batch_size=8, micro_batch_size=micro, world_size=world,
                           rank=r, seed=7) for r in range(world)]
        return [sorted(i for p in plans for m in range(accum) for i in p.indices(step, m))
                for step in range(10)]

    reference = step_sets(1, 8)
    assert step_sets(world, micro) == reference
    assert all(len(s) == len(set(s)) == 8 for s in reference)
    epoch0 = [i for s in reference[:4] for i in s]  # 4 steps per epoch of 35 // 8
    assert len(set(epoch0)) == 32 and reference[4] != reference[0]


def test_count_tokens_prefers_attention_masks():
    batch = {"chosen_input_ids": torch.ones(2, 5), "chosen_attention_mask": torch.tensor(
        [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]), "rejected_attention_mask": torch.ones(2, 5)}
    assert count_tokens(batch) == 8 + 10
    assert count_tokens({"input_ids": torch.ones(3, 4)}) == 12


def test_step_stats_average_over_micro_batches():
    """Two micro batches: loss (2 + 4) / 2, metric (1 + 3) / 2, tokens 5 + 7 (one worker)."""
    stats = StepStats()
    stats.add(torch.tensor(2.0), {"acc": torch.tensor(1.0), "n": 3}, tokens=5)
    stats.add(torch.tensor(4.0), {"acc": torch.tensor(3.0), "n": 5}, tokens=7)
    assert stats.reduce(torch.device("cpu")) == (3.0, {"acc": 2.0, "n": 4.0}, 12)

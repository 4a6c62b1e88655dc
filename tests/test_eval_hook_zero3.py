"""The loop's `eval_fn` on real Ray Train + DeepSpeed runs (CPU accelerator, gloo, 2
workers): under ZeRO-3 with every weight partitioned, rank 0 evaluates with the whole
model, and training goes on exactly as without the evaluation.

The model is a ~90k-parameter random-init Llama with attention dropout 0.1, so training
draws random numbers at every step; the probe draws some too. Three runs of 6 steps
(4 sequences of 16 tokens each, lr 1e-3), evaluated every 2 steps, reports every 3:

- ZeRO-3, evaluated: the probe sees every parameter element (a partitioned weight has
  none on a rank) and its log-likelihood of a fixed sequence matches the ZeRO-2 run's at
  the same step (rtol 1e-5: ZeRO-3 sums gradients in another order, observed ~1e-7 in
  tests/test_zero3_bf16.py);
- ZeRO-3, not evaluated: the same losses at every step, bit for bit expected (tolerance
  rtol 1e-6, atol 1e-7): the evaluation changed neither the weights, nor the ZeRO-3 hooks
  training needs, nor the dropout masks;
- evaluations at steps 2 and 4 only (never at the run's last step), each forcing a report
  at a step that `log_every` 3 would not report.
"""

from __future__ import annotations

import sys
from functools import partial

import pytest
import ray
import torch

from raydaa.io.models import pretrained_model
from raydaa.train import TrainSettings, run_training

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.deepspeed]

VOCAB, SEQ_LEN, STEPS = 64, 16, 6
# a run stuck in a collective (rank 0 evaluating through ZeRO-3's hooks alone) fails with
# its phase within the stall bound instead of hanging
BASE = {"total_steps": STEPS, "global_batch_size": 4, "num_workers": 2, "lr": 1e-3, "seed": 0,
        "log_every": 3, "startup_timeout_s": 600, "stall_timeout_s": 180}
ZERO3 = {"zero_stage": 3, "deepspeed_overrides": {
    "zero_optimization": {"stage3_param_persistence_threshold": 0}}}  # partition every weight
PROBE_IDS = torch.arange(12).reshape(1, 12) * 5 % VOCAB
TRAJECTORY_TOL = {"rel": 1e-5, "abs": 1e-6}
SAME_RUN_TOL = {"rel": 1e-6, "abs": 1e-7}


def dropout_llama():
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=SEQ_LEN, attention_dropout=0.1)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


def causal_lm_loss(engine, batch):
    input_ids = batch["input_ids"]  # (B, T)
    logits = engine(input_ids=input_ids).logits[:, :-1]  # (B, T-1, V)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), input_ids[:, 1:].reshape(-1))
    return loss, {}


def sequences():
    g = torch.Generator().manual_seed(7)
    return [{"input_ids": torch.randint(0, VOCAB, (SEQ_LEN,), generator=g)} for _ in range(32)]


class Probe:
    """Rank 0: the number of parameter elements the module holds, its log-likelihood of
    PROBE_IDS in eval mode, and a random draw (which training must not notice)."""

    def __call__(self, engine, step):
        if torch.distributed.get_rank() != 0:
            return {}
        model = engine.module.eval()
        with torch.no_grad():
            logits = model(input_ids=PROBE_IDS.to(engine.device)).logits[0, :-1].float()
        logp = torch.log_softmax(logits, -1).gather(1, PROBE_IDS[0, 1:, None].to(logits.device))
        return {"probe_numel": sum(p.numel() for p in model.parameters()),
                "probe_logp": float(logp.sum()), "probe_draw": float(torch.rand(()))}


@pytest.fixture(scope="module", autouse=True)
def _ship_this_module_by_value():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def runs(ray_cluster, tmp_path_factory):
    """The three runs, each from the same saved random-init model (an init under ZeRO-3's
    partitioned construction would draw other weights)."""
    storage = tmp_path_factory.mktemp("ray_storage")
    base = tmp_path_factory.mktemp("base_model")
    dropout_llama().save_pretrained(base)

    def train(name, eval_every, **overrides):
        settings = TrainSettings(**BASE, eval_every=eval_every, **overrides)
        result = run_training(settings, model_fn=partial(pretrained_model, str(base)),
                              loss_fn=causal_lm_loss,
                              dataset=sequences(), eval_fn=Probe(), name=name,
                              storage_path=str(storage))
        return result.return_value["history"]

    return {
        "zero3_eval": train("zero3_eval", 2, **ZERO3),
        "zero3": train("zero3", None, **ZERO3),
        "zero2_eval": train("zero2_eval", 2, zero_stage=2),
    }


def test_zero3_evaluation_sees_the_whole_model_and_leaves_training_as_it_was(runs):
    evaluated = runs["zero3_eval"]
    assert [h["step"] for h in evaluated] == [2, 3, 4, 6]
    assert [h["step"] for h in runs["zero3"]] == [3, 6]
    probes = {h["step"]: h for h in evaluated if "probe_logp" in h}
    assert sorted(probes) == [2, 4]
    full = sum(p.numel() for p in dropout_llama().parameters())
    assert all(probe["probe_numel"] == full for probe in probes.values())
    zero2 = {h["step"]: h for h in runs["zero2_eval"] if "probe_logp" in h}
    for step in (2, 4):
        assert probes[step]["probe_logp"] == pytest.approx(zero2[step]["probe_logp"], **TRAJECTORY_TOL)
    plain = {h["step"]: h["loss"] for h in runs["zero3"]}
    for step in (3, 6):
        loss = next(h["loss"] for h in evaluated if h["step"] == step)
        assert loss == pytest.approx(plain[step], **SAME_RUN_TOL)
    assert evaluated[-1]["status"] == "finished"

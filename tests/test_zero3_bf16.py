"""ZeRO-3 and bf16 on real Ray Train + DeepSpeed runs: CPU accelerator, gloo, 2 workers.

The step is the product's own: raydaa's `PreferenceObjective` (SimPO, reference-free,
beta 2) over `PreferenceCollator` batches of synthetic pairs, on a ~90k-parameter
random-init Llama saved once and loaded by every run with `pretrained_model` (as the
alignment stage loads its SFT model). 6 steps of 8 pairs (2 workers x micro 2 x
accumulation 2), lr 1e-3 decaying linearly (its sum over the run, Σlr = 3.5e-3, is also
the furthest Adam moves any weight: observed max travel 3.50e-3), checkpoints every 2 steps.
Four runs, shared by the tests: ZeRO-2; ZeRO-3 with gradient checkpointing (every weight
partitioned: see ZERO3); the same ZeRO-3 run with a worker SIGKILLed after its step-2
checkpoint and restarted by Ray Train (max_failures=1); and that ZeRO-3 run in bf16.

Tolerances, with what was observed (the same values on every run here: CPU is
deterministic; the margins are for other CPUs and library versions):

- ZeRO-3 vs ZeRO-2 losses and grad norms: rtol=1e-5, atol=1e-6 (the engine's trajectory
  tolerance, tests/test_train_engine.py). Observed max |diff| 8.9e-8 on losses 1.03-1.35,
  5.5e-7 on grad norms ~4: ZeRO-3 reduces gradients in another fp32 summation order.
- ZeRO-3 vs ZeRO-2 HF exports: each weight within atol=2e-5 (observed max 1.8e-6, in
  Adam coordinates with near-zero gradients, where the update direction follows
  summation noise; 2e-5 is 1/175 of one run's travel Σlr), and the training update as a
  whole, |Δw3 - Δw2| / |Δw2| with Δ = final - initial weights, within 1e-4 (observed
  3.1e-6; a 0.1% lr change gives 1.0e-3 and still passes the per-weight check).
- Killed-and-restarted vs uninterrupted ZeRO-3 run: rtol=1e-6, atol=1e-7 on the losses
  of the replayed steps 3-6 and on every exported weight. Observed bit-exact (0).
- bf16 vs fp32 (both ZeRO-3 + gradient checkpointing). bf16 keeps 8 significant bits
  (unit roundoff 2^-9 ~ 2e-3); DeepSpeed keeps fp32 master weights and Adam state, the
  objective reduces log-probs in fp32, so what differs is bf16 forward/backward noise:
  * per-step loss |diff| <= 5e-3. Observed 2.4e-4, 1.3e-3, 2.8e-5, 1.2e-4, 7.3e-4, 1.6e-4
    (max 1.3e-3, about 2^-9 of the loss). The bound is 4x that and 5x below the smallest
    step-to-step loss change of the run (0.026; the loss falls 0.32 over it), so a bf16
    run one step off, or training at another rate, fails;
  * each final weight: |w_bf16 - w_fp32| <= Σlr + 2^-8 |w_fp32|: no further apart than one
    whole run's Adam travel plus bf16 rounding (the bf16 run starts from the bf16-rounded
    initial weights and exports bf16). Observed max ratio to the bound 0.68;
  * the update as a whole: |Δw_bf16 - Δw_fp32| / |Δw_fp32| <= 0.15. Observed 0.072, of
    which 0.054 is the export's rounding to bf16 alone (rounding the fp32 run's final
    weights to bf16 moves them by 0.054 |Δw_fp32|). Doubling bf16's lr gives 1.0 (and a
    per-weight ratio of 1.77, a loss diff of 0.20).
  bf16 must also be in effect: bf16 weights exported, losses not fp32's to the bit.

Each check was seen to fail on a deliberate break of what it guards: ZeRO-3 lr x1.001
(trajectory: loss diff 2.6e-4; export: update distance 1.0e-3), export of the
un-gathered ZeRO-3 partitions and a 1e-4 change of one exported weight (export), resume
without the optimizer state (restart: loss diff 2.4e-2), DeepSpeed bf16 off and bf16 lr x2
(bf16: fp32 export; loss diff 0.20).

DeepSpeed printed no ZeRO-3 warning in these runs (none with log_trace_cache_warnings on
either: no "Invalidate trace cache"), only torch's FutureWarnings about its collectives.
On 2 cores the module took 145 s with the machine nearly idle, 260 s beside other jobs.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import pytest
import ray
import torch

from raydaa.core.logprobs import IGNORE_INDEX
from raydaa.core.methods import LossConfig
from raydaa.data.collators import PreferenceCollator
from raydaa.io.models import pretrained_model
from raydaa.train import TrainSettings, run_training
from raydaa.train.objectives import PreferenceObjective

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.deepspeed]

VOCAB, PROMPT_LEN, COMPLETION_LEN, NUM_PAIRS = 64, 4, 8, 64
STEPS, CHECKPOINT_EVERY = 6, 2
# 2 workers x micro 2 x accumulation 2 = 8 pairs per step; 48 of the 64 pairs in 6 steps.
BASE = {"total_steps": STEPS, "global_batch_size": 8, "micro_batch_size": 2, "num_workers": 2,
        "lr": 1e-3, "seed": 0, "checkpoint_every": CHECKPOINT_EVERY}
ACCUM = BASE["global_batch_size"] // (BASE["micro_batch_size"] * BASE["num_workers"])
# ZeRO-3 keeps parameters under 1e5 elements whole on every rank (its default
# stage3_param_persistence_threshold): all of this tiny model's, so nothing would be
# partitioned, gathered or exported from partitions. Threshold 0 partitions every weight,
# as a 7-8B model's matrices are.
ZERO3 = {"zero_stage": 3, "gradient_checkpointing": True, "deepspeed_overrides": {
    "zero_optimization": {"stage3_param_persistence_threshold": 0}}}
OBJECTIVE = PreferenceObjective(LossConfig("simpo", beta=2.0))
COLLATE = PreferenceCollator(pad_token_id=0)

TRAJECTORY_TOL = {"rtol": 1e-5, "atol": 1e-6}
EXPORT_TOL = {"rtol": 0.0, "atol": 2e-5}
EXPORT_UPDATE_TOL = 1e-4
RESUME_TOL = {"rtol": 1e-6, "atol": 1e-7}
BF16_LOSS_BOUND = 5e-3
BF16_UPDATE_BOUND = 0.15


def preference_pairs() -> list[dict[str, Any]]:
    """NUM_PAIRS rows in `prepare_preferences` form: a random 4-token prompt; chosen counts
    on from the prompt's last token (+1 mod V, 8 tokens), rejected is 5-8 random tokens
    (so batches are padded). Prompt positions are masked out of the labels."""
    g = torch.Generator().manual_seed(1234)
    rows = []
    for index in range(NUM_PAIRS):
        prompt = torch.randint(0, VOCAB, (PROMPT_LEN,), generator=g)
        chosen = (prompt[-1] + 1 + torch.arange(COMPLETION_LEN)) % VOCAB
        rejected_len = int(torch.randint(COMPLETION_LEN - 3, COMPLETION_LEN + 1, (1,), generator=g))
        rejected = torch.randint(0, VOCAB, (rejected_len,), generator=g)
        row: dict[str, Any] = {"index": index}
        for side, completion in (("chosen", chosen), ("rejected", rejected)):
            row[f"{side}_input_ids"] = torch.cat([prompt, completion]).tolist()
            row[f"{side}_labels"] = [IGNORE_INDEX] * PROMPT_LEN + completion.tolist()
        rows.append(row)
    return rows


@dataclass
class ParkAfterCheckpoint:
    """The objective, except in a run's first attempt: each worker parks at its first
    micro batch after `after_calls` (the step after a checkpoint), having written its pid
    into the folder `parked`, until the file `release` exists. A restarted attempt (new
    worker processes) finds `release` and runs on."""

    objective: Any
    after_calls: int
    release: str
    parked: str
    _calls: int = 0

    def __call__(self, model, batch):
        self._calls += 1
        if self._calls > self.after_calls and not os.path.exists(self.release):
            Path(self.parked, str(os.getpid())).touch()
            while not os.path.exists(self.release):
                time.sleep(0.05)
        return self.objective(model, batch)


@pytest.fixture(scope="module", autouse=True)
def _ship_this_module_by_value():
    # pytest imports this file as a top-level module that Ray's workers cannot import.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    return tmp_path_factory.mktemp("ray_storage")


@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory):
    """A random-init Llama (hidden 64, 2 layers, vocab 64) saved as an HF checkpoint."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=2 * (PROMPT_LEN + COMPLETION_LEN))
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("base_model")
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    return str(path)


def train(storage, base_model_dir, name, objective=OBJECTIVE, max_failures=0, **overrides):
    settings = TrainSettings(**{**BASE, **overrides})
    return run_training(settings, model_fn=partial(pretrained_model, base_model_dir),
                        loss_fn=objective, dataset=preference_pairs(), collate_fn=COLLATE,
                        name=name, storage_path=str(storage), max_failures=max_failures)


@pytest.fixture(scope="module")
def zero2_run(ray_cluster, storage, base_model_dir):
    return train(storage, base_model_dir, "zero2", zero_stage=2)


@pytest.fixture(scope="module")
def zero3_run(ray_cluster, storage, base_model_dir):
    return train(storage, base_model_dir, "zero3", **ZERO3)


@pytest.fixture(scope="module")
def bf16_run(ray_cluster, storage, base_model_dir):
    return train(storage, base_model_dir, "zero3_bf16", bf16=True, **ZERO3)


def wait_for(condition, what, timeout=300):
    deadline = time.time() + timeout
    while not (value := condition()):
        if time.time() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.1)
    return value


@pytest.fixture(scope="module")
def killed_run(ray_cluster, storage, base_model_dir, tmp_path_factory):
    """The ZeRO-3 run, with max_failures=1; once both workers are past the step-2
    checkpoint (parked in step 3) and the Train controller has registered it, one worker
    is SIGKILLed. Returns (result, the killed pid)."""
    control = tmp_path_factory.mktemp("kill_control")
    release, parked = control / "release", control / "parked"
    parked.mkdir()
    objective = ParkAfterCheckpoint(OBJECTIVE, after_calls=CHECKPOINT_EVERY * ACCUM,
                                    release=str(release), parked=str(parked))
    out: dict[str, Any] = {}

    def run():
        try:
            out["result"] = train(storage, base_model_dir, "zero3_killed", objective,
                                  max_failures=1, **ZERO3)
        except BaseException as err:  # noqa: BLE001 - re-raised below
            out["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for(lambda: not thread.is_alive() or len(os.listdir(parked)) == 2,
                 "both workers parked after the checkpoint")
        if not thread.is_alive():
            raise out.get("error") or AssertionError("the run ended before it was killed")
        # Written by the Train controller once it has registered a checkpoint.
        wait_for((storage / "zero3_killed" / "checkpoint_manager_snapshot.json").exists,
                 "the registered step-2 checkpoint")
        victim = min(int(pid) for pid in os.listdir(parked))
        assert " ".join(psutil.Process(victim).cmdline()).startswith("ray::RayTrainWorker")
        os.kill(victim, signal.SIGKILL)
    finally:
        release.touch()  # lets the survivor run into its dead peer; never leaves it parked
        thread.join(timeout=600)
    if "error" in out:
        raise out["error"]
    return out["result"], victim


def losses(result, key="loss"):
    return torch.tensor([h[key] for h in result.return_value["history"]], dtype=torch.float64)


def hf_dir(result) -> str:
    return os.path.join(result.checkpoint.path, "hf")


def hf_weights(result) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(os.path.join(hf_dir(result), "model.safetensors"))


def base_weights(base_model_dir) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(os.path.join(base_model_dir, "model.safetensors"))


def deepspeed_files(result) -> set[str]:
    return set(os.listdir(os.path.join(result.checkpoint.path, "deepspeed", "state")))


def zero3_config(result) -> dict[str, Any]:
    """The ZeRO section of the DeepSpeed config the run's rank 0 ran with."""
    states = torch.load(os.path.join(result.checkpoint.path, "deepspeed", "state",
                                     "zero_pp_rank_0_mp_rank_00_model_states.pt"),
                        map_location="cpu", weights_only=False)
    return states["ds_config"]["zero_optimization"]


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[n].double() - b[n].double()).abs().max().item() for n in a)


def update_distance(weights, reference, initial) -> float:
    """|(weights - initial) - (reference - initial)| / |reference - initial| over all
    tensors at once: how far one run's training moved the model from where another's did."""
    names = sorted(reference)
    update = torch.cat([(weights[n].double() - initial[n].double()).flatten() for n in names])
    expected = torch.cat([(reference[n].double() - initial[n].double()).flatten() for n in names])
    return ((update - expected).norm() / expected.norm()).item()


def test_zero3_loss_trajectory_equals_zero2(zero2_run, zero3_run):
    """Same seed, data and global batches on 2 ranks: ZeRO-3 (every weight partitioned,
    gradient checkpointing) takes ZeRO-2's steps: per-step loss and grad norm."""
    for run in (zero2_run, zero3_run):
        assert run.return_value["status"] == "finished"
        assert [h["step"] for h in run.return_value["history"]] == list(range(1, STEPS + 1))
    # It really is ZeRO-3: model states partitioned per rank (ZeRO-2 writes one file).
    assert "mp_rank_00_model_states.pt" in deepspeed_files(zero2_run)
    per_rank = {f"zero_pp_rank_{r}_mp_rank_00_model_states.pt" for r in (0, 1)}
    assert per_rank <= deepspeed_files(zero3_run)
    assert zero3_config(zero3_run)["stage3_param_persistence_threshold"] == 0
    print("max |loss diff| zero3 vs zero2:",
          (losses(zero3_run) - losses(zero2_run)).abs().max().item())
    print("max |grad_norm diff| zero3 vs zero2:",
          (losses(zero3_run, "grad_norm") - losses(zero2_run, "grad_norm")).abs().max().item())
    torch.testing.assert_close(losses(zero3_run), losses(zero2_run), **TRAJECTORY_TOL)
    torch.testing.assert_close(losses(zero3_run, "grad_norm"), losses(zero2_run, "grad_norm"),
                               **TRAJECTORY_TOL)
    # and the trajectory is one that learns (observed 1.350 at step 1, 1.026 at step 4)
    assert losses(zero3_run).min() < losses(zero3_run)[0] - 0.2


def test_zero3_hf_export_loads_whole_and_equals_zero2(zero2_run, zero3_run, base_model_dir):
    """The `hf/` export of the final ZeRO-3 checkpoint is the whole gathered model: HF
    loads every weight with its full shape, and each equals ZeRO-2's export."""
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(hf_dir(zero3_run), output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched weight
    loaded = model.state_dict()
    expected, initial = hf_weights(zero2_run), base_weights(base_model_dir)
    assert set(loaded) == set(expected) == set(initial)
    print("max |weight diff| zero3 vs zero2 export:", max_diff(loaded, expected))
    for name, tensor in expected.items():
        assert loaded[name].dtype == tensor.dtype == torch.float32, name
        torch.testing.assert_close(loaded[name], tensor, **EXPORT_TOL, msg=name)
        # the export is the trained model: every tensor moved (observed ~3.5e-3 = sum of lr)
        assert (loaded[name] - initial[name]).abs().max() > 1e-3, name
    relative = update_distance(loaded, expected, initial)
    print("relative distance of the zero3 update from the zero2 update:", relative)
    assert relative <= EXPORT_UPDATE_TOL


def test_killed_zero3_run_resumes_to_the_same_weights(zero3_run, killed_run):
    """SIGKILL of a worker in step 3: Ray Train restarts the worker group from the step-2
    checkpoint (both ranks' partitions of weights and Adam state, lr schedule, RNG, data
    position) and the run ends with the uninterrupted run's weights."""
    killed, victim = killed_run
    assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE
    assert killed.return_value["status"] == "finished"
    # The returned history is the restarted attempt's: from the step-2 checkpoint on.
    assert [h["step"] for h in killed.return_value["history"]] == list(
        range(CHECKPOINT_EVERY + 1, STEPS + 1))
    uninterrupted = losses(zero3_run)[CHECKPOINT_EVERY:]
    print("max |loss diff| killed vs uninterrupted:",
          (losses(killed) - uninterrupted).abs().max().item())
    torch.testing.assert_close(losses(killed), uninterrupted, **RESUME_TOL)
    expected, restarted = hf_weights(zero3_run), hf_weights(killed)
    assert expected.keys() == restarted.keys()
    print("max |weight diff| killed vs uninterrupted:", max_diff(restarted, expected))
    for name, tensor in expected.items():
        torch.testing.assert_close(restarted[name], tensor, **RESUME_TOL, msg=name)


def test_bf16_run_stays_within_bf16_noise_of_fp32(zero3_run, bf16_run, base_model_dir):
    """bf16 weights and compute (fp32 master weights): the same run as the fp32 ZeRO-3 one
    within bf16 noise, per-step losses and final weights (bounds: module docstring)."""
    assert bf16_run.return_value["status"] == "finished"
    fp32, bf16 = hf_weights(zero3_run), hf_weights(bf16_run)
    initial = base_weights(base_model_dir)
    # bf16 was in effect: bf16 weights exported, and the losses are not fp32's to the bit.
    assert {t.dtype for t in bf16.values()} == {torch.bfloat16}
    loss_diff = (losses(bf16_run) - losses(zero3_run)).abs()
    print("per-step |loss diff| bf16 vs fp32:", loss_diff.tolist())
    assert loss_diff.max() > 0
    assert loss_diff.max() <= BF16_LOSS_BOUND
    # Each weight: within one run's Adam travel (Σlr) plus bf16 rounding of it.
    travel = sum(h["lr"] for h in zero3_run.return_value["history"])
    ratios = []
    for name, tensor in fp32.items():
        diff = (bf16[name].double() - tensor.double()).abs()
        bound = travel + 2.0**-8 * tensor.double().abs()
        ratios.append((diff / bound).max().item())
    print("max |weight diff| / (travel + 2^-8 |w|):", max(ratios))
    assert max(ratios) <= 1.0
    relative = update_distance(bf16, fp32, initial)
    print("relative distance of the bf16 update from the fp32 update:", relative)
    assert relative <= BF16_UPDATE_BOUND

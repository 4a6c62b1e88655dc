"""Collapsed-configuration detection on real trainings (no Ray: plain torch, CPU).

Tiny's random-init Llama is trained with NCA for a few Adam steps on fixed preference
pairs; each trained model's probe is its sequence log-probs of fixed probe sequences, as
`probe_logp` is in a trial's records. Three models:

    a   NCA β 1e-3, lr 1e-3     trained twice (a1, a2): the same model
    b   NCA β 1e-2, lr 1e-3     a near neighbour (Theorem 3.6: nearly the same steps)
    c   NCA β 10,   lr 1e-3     another model

`collapsed_groups` must put a1 and a2 in one group and leave c out; the rows' quality and
KL all differ, so only the probes can group them. b is not the same model at the default
tolerance: measured, its probe is 1.8e-3 (relative) from a's, 5.0e-2 for c, 0 between a1 and
a2. So after a few steps at this lr, β 1e-3 and 1e-2 are close but not one model; the
detector groups only what trained (to within 1e-4) the same weights' behaviour.
"""

import numpy as np
import torch

from raydaa.core.logprobs import model_sequence_logps
from raydaa.losses import preference_loss
from raydaa.report.collapsed import collapsed_groups
from raydaa.scenarios import build_tiny_model

PAIRS, PROBES, LENGTH, STEPS = 8, 6, 12, 4


def _batch(seed: int, rows: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (rows, LENGTH), generator=generator)
    labels = ids.clone()
    labels[:, : LENGTH // 2] = -100  # the first half is the prompt
    return ids, torch.ones_like(ids), labels


def _logps(model, batch) -> torch.Tensor:
    return model_sequence_logps(model, *batch).sum


def _trained_probe(beta: float) -> np.ndarray:
    torch.manual_seed(0)
    model = build_tiny_model(seed=0)
    vocab = model.config.vocab_size
    chosen, rejected = _batch(1, PAIRS, vocab), _batch(2, PAIRS, vocab)
    with torch.no_grad():
        ref_chosen, ref_rejected = _logps(model, chosen), _logps(model, rejected)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = preference_loss(
            "nca", _logps(model, chosen), _logps(model, rejected), ref_chosen, ref_rejected,
            beta=beta,
        ).losses.mean()  # fmt: skip
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return _logps(model, _batch(3, PROBES, vocab)).double().numpy()


def test_collapsed_groups_on_real_trainings():
    probes = {"a1": _trained_probe(1e-3), "a2": _trained_probe(1e-3),
              "b": _trained_probe(1e-2), "c": _trained_probe(10.0)}  # fmt: skip
    initial = np.abs(probes["c"]).max()
    # the trainings moved the model: c is far from a beyond the detection tolerance
    assert np.abs(probes["c"] - probes["a1"]).max() / (1 + initial) > 1e-3
    betas = {"a1": 1e-3, "a2": 1e-3, "b": 1e-2, "c": 10.0}
    rows = [
        {"trial_id": t, "method": "nca", "beta": betas[t], "lr": 1e-3, "sft_weight": 0.0,
         "status": "finished", "quality": 0.5 + 0.01 * n, "kl": 0.1 * (n + 1)}
        for n, t in enumerate(probes)
    ]  # fmt: skip

    def records_for(row):
        return {"source": np.array(["validation"] * PROBES), "prompt_id": np.arange(PROBES),
                "probe_logp": probes[row["trial_id"]]}  # fmt: skip

    groups = collapsed_groups(rows, records_for)
    assert [sorted(g.trials) for g in groups] == [["a1", "a2"]]
    assert groups[0].betas == (1e-3,) and groups[0].evidence == "probe_logp"

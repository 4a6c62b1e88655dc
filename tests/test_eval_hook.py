"""The training loop's evaluation hook (raydaa.train.eval_hook) without a process group:
what it hands back, and what it leaves as it was (randomness, train/eval mode)."""

from types import SimpleNamespace

import torch

from raydaa.train.eval_hook import describe, from_rank0, run_eval


def engine():
    return SimpleNamespace(module=torch.nn.Linear(2, 2).train())


def test_metrics_come_back_and_training_randomness_is_untouched():
    """The evaluation draws (and reseeds) torch's RNG and puts the module in eval mode;
    afterwards the RNG continues as if it had not run, and the module trains again."""
    def evaluate(eng, step):
        eng.module.eval()
        torch.manual_seed(1234)  # as sampling does, batch by batch
        return {"step_seen": step, "draw": float(torch.rand(()))}

    eng = engine()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    metrics = run_eval(eng, evaluate, 8, rank=0, world=1, zero_stage=2)
    seeded = torch.Generator().manual_seed(1234)
    assert metrics == {"step_seen": 8, "draw": float(torch.rand((), generator=seeded))}
    assert torch.equal(torch.rand(3), expected)
    assert eng.module.training


def test_a_failed_evaluation_is_reported_not_raised():
    def broken(eng, step):
        eng.module.eval()
        raise ConnectionError("judge endpoint down")

    eng = engine()
    metrics = run_eval(eng, broken, 4, rank=0, world=1, zero_stage=2)
    assert metrics == {"eval_error": "ConnectionError: judge endpoint down"}
    assert eng.module.training
    assert describe(broken, metrics) == "evaluation failed: ConnectionError: judge endpoint down"


def test_describe_uses_the_evaluation_s_own_line():
    class WithLine:
        def describe(self, metrics):
            return f"quality {metrics['quality']}"

    assert describe(WithLine(), {"quality": 0.5}) == "quality 0.5"
    assert describe(lambda e, s: {}, {"quality": 0.5, "note": "x", "n": 32}) == "quality 0.5, n 32"
    assert from_rank0({"quality": 0.5}, rank=0, world=1) == {"quality": 0.5}

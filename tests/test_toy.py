"""The toy example (paper Appendix H): data, losses, batched training, report, `raydaa toy`."""

import csv
import math

import pytest
import torch

from raydaa.study import toy


def test_triplets_are_2000_ordered_split_80_20_and_seeded():
    data = toy.make_triplets()
    assert len(data.train) == 1600 and len(data.test) == 400
    for part in (data.train, data.test):
        assert bool((part.y_w > part.y_l).all())
        assert part.x.dtype == torch.float32
    again, other = toy.make_triplets(seed=0), toy.make_triplets(seed=1)
    assert torch.equal(again.train.y_w, data.train.y_w) and torch.equal(again.test.x, data.test.x)
    assert not torch.equal(other.train.x, data.train.x)
    # Train and test are disjoint draws (continuous values never repeat).
    assert not set(data.test.x.tolist()) & set(data.train.x.tolist())


def test_triplets_reject_an_empty_split():
    with pytest.raises(ValueError, match="empty split"):
        toy.make_triplets(n=3, test_fraction=0.1)
    with pytest.raises(ValueError, match="test_fraction"):
        toy.make_triplets(test_fraction=1.0)


def test_losses_by_hand():
    """Appendix H, with σ(z) = 1/(1+e^-z):
    pairwise  -log σ(β(r_w - r_l)) = log(1 + e^{-β(r_w - r_l)})
    pointwise -[log σ(β r_w) + log σ(-β r_l)] = log(1 + e^{-β r_w}) + log(1 + e^{β r_l})

    (r_w, r_l, β) = (1, 0, 2):  pairwise log(1+e^-2) = 0.126928
                               pointwise log(1+e^-2) + log 2 = 0.820075
    (0, 0, 2):                 pairwise log 2 = 0.693147, pointwise 2 log 2 = 1.386294
    (-1, 1, 0.5):              pairwise log(1+e) = 1.313262,
                               pointwise 2 log(1+e^0.5) = 1.948154
    """
    r_w = torch.tensor([1.0, 0.0, -1.0])
    r_l = torch.tensor([0.0, 0.0, 1.0])
    beta = torch.tensor([2.0, 2.0, 0.5])
    torch.testing.assert_close(
        toy.pairwise_loss(r_w, r_l, beta), torch.tensor([0.126928, 0.693147, 1.313262])
    )
    torch.testing.assert_close(
        toy.pointwise_loss(r_w, r_l, beta), torch.tensor([0.820075, 1.386294, 1.948154])
    )


def test_only_the_pointwise_loss_sees_a_common_reward_shift():
    """Pairwise depends on r_w - r_l only; pointwise judges each reward against 0."""
    r_w, r_l = torch.tensor([0.3, -0.2]), torch.tensor([-0.1, -0.5])
    shift = 3.0
    torch.testing.assert_close(
        toy.pairwise_loss(r_w + shift, r_l + shift, 1.0), toy.pairwise_loss(r_w, r_l, 1.0)
    )
    assert not torch.allclose(
        toy.pointwise_loss(r_w + shift, r_l + shift, 1.0), toy.pointwise_loss(r_w, r_l, 1.0)
    )


def _one_mlp(w1, b1, w2, b2) -> toy.MLPBatch:
    t = torch.tensor
    return toy.MLPBatch(t([w1]), t([[b1]]), t([w2]), t([[[b2]]]))


def test_mlp_reward_and_strict_accuracy_by_hand():
    """r(x, y) = 3 · ReLU(x + 2y - 1) + 0.5:
    (1, 1) -> 3·2 + 0.5 = 6.5;  (0, 0) -> 0.5 (dead ReLU);  (0, 1) -> 3·1 + 0.5 = 3.5.
    Triplets (x, y_w, y_l): (0, 1, 0): 3.5 > 0.5, right; (0, -1, -2): 0.5 = 0.5, a tie,
    counted wrong (the appendix's accuracy is the share with r_w > r_l) -> accuracy 1/2."""
    mlp = _one_mlp([[1.0], [2.0]], [-1.0], [[3.0]], 0.5)
    r = mlp.rewards(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 1.0]]))
    torch.testing.assert_close(r, torch.tensor([[6.5, 0.5, 3.5]]))
    triplets = toy.Triplets(
        torch.tensor([0.0, 0.0]), torch.tensor([1.0, -1.0]), torch.tensor([0.0, -2.0])
    )
    accuracy, ties = toy.ranking_accuracy(mlp, triplets)
    assert accuracy.tolist() == [0.5] and ties.tolist() == [0.5]


def test_batched_runs_equal_independent_single_runs():
    """Model (β_i, seed_j) of one batched call = the same β and seed trained alone."""
    data = toy.make_triplets()
    settings = toy.ToySettings(epochs=2, batch_size=64)
    kwargs = dict(loss="pointwise", hidden=3, lr=0.05, settings=settings)
    betas, seeds = (1.0, 0.1), (0, 1, 2)
    batched, models = toy.train_runs(data, betas=betas, seeds=seeds, **kwargs)
    for i, j in ((0, 2), (1, 0)):
        single, alone = toy.train_runs(data, betas=[betas[i]], seeds=[seeds[j]], **kwargs)
        m = i * len(seeds) + j
        for p_batch, p_alone in zip(models.parameters(), alone.parameters(), strict=True):
            torch.testing.assert_close(p_batch[m], p_alone[0], rtol=1e-5, atol=1e-6)
        assert batched.accuracy[i, j] == single.accuracy[0, 0]
        torch.testing.assert_close(batched.final_train_loss[i, j], single.final_train_loss[0, 0])
    # Different seeds are different runs.
    assert not torch.equal(models.w1[0], models.w1[1])


def test_training_learns_the_ranking():
    """y_w > y_l is learnable exactly (r = y); 3 epochs of pairwise Adam get most of it,
    from a random init that ranks about half of the triplets right on average."""
    data = toy.make_triplets()
    seeds = range(8)
    init = toy.MLPBatch.init([torch.Generator().manual_seed(s) for s in seeds], 3)
    before, _ = toy.ranking_accuracy(init, data.test)
    after, _ = toy.train_runs(
        data,
        loss="pairwise",
        hidden=3,
        lr=0.1,
        betas=[1.0],
        seeds=seeds,
        settings=toy.ToySettings(epochs=3),
    )
    assert before.mean() < 0.8
    assert after.accuracy.mean() > 0.95


def test_train_runs_rejects_unknown_loss():
    with pytest.raises(ValueError, match="unknown toy loss 'hinge'"):
        toy.train_runs(toy.make_triplets(), loss="hinge", hidden=1, lr=0.1, betas=[1.0], seeds=[0])


def test_summary_interval_and_best_config_by_hand():
    """Accuracies 0.5, 0.7, 0.9: mean 0.7, sd 0.2, 95% half-width 1.96 · 0.2/√3 = 0.226321."""
    results = toy.RunResults(
        betas=(1.0, 0.1),
        seeds=(0, 1, 2),
        accuracy=torch.tensor([[0.5, 0.7, 0.9], [0.8, 0.8, 0.8]]),
        tie_rate=torch.tensor([[0.1, 0.0, 0.0], [0.0, 0.0, 0.0]]),
        final_train_loss=torch.zeros(2, 3),
    )
    rows = toy.summarize("pairwise", 3, 0.1, results)
    assert rows[0].accuracy == pytest.approx(0.7)
    assert rows[0].accuracy_low == pytest.approx(0.7 - 0.226321, abs=1e-6)
    assert rows[0].accuracy_high == pytest.approx(0.7 + 0.226321, abs=1e-6)
    assert rows[0].tie_rate == pytest.approx(1 / 30)
    assert rows[1].accuracy_low == pytest.approx(0.8)  # no spread, no width
    # 1, 1, 0: mean 2/3, sd √(1/3), half-width 1.96·√(1/3)/√3 = 1.96/3 -> [0.013333, 1.32]
    # clipped to [0.013333, 1].
    mean, low, high, _ = toy.mean_interval(torch.tensor([1.0, 1.0, 0.0]))
    assert (mean, low, high) == pytest.approx((2 / 3, 0.013333, 1.0), abs=1e-6)
    other = toy.summarize("pointwise", 3, 0.3, results)
    best = toy.best_configs(rows + other)
    assert [(b.loss, b.beta, b.lr) for b in best] == [
        ("pairwise", 0.1, 0.1),
        ("pointwise", 0.1, 0.3),
    ]


def test_write_report_files(tmp_path):
    rows = [
        toy.ConfigResult(loss, h, 0.1, beta, 3, acc, acc - 0.01, acc + 0.01, 0.01, 0.0)
        for loss, h, beta, acc in [
            ("pairwise", 1, 1.0, 0.90),
            ("pairwise", 1, 0.1, 0.95),
            ("pointwise", 1, 1.0, 0.85),
            ("pairwise", 3, 1.0, 0.99),
            ("pointwise", 3, 1.0, 0.97),
        ]
    ]
    paths = toy.write_report(rows, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "toy.md",
        "toy.png",
        "toy_best.csv",
        "toy_grid.csv",
    ]  # no temporary files left behind
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(paths["best_csv"]) as f:
        best = list(csv.DictReader(f))
    assert [(b["hidden"], b["loss"], b["beta"]) for b in best] == [
        ("1", "pairwise", "0.1"),
        ("1", "pointwise", "1.0"),
        ("3", "pairwise", "1.0"),
        ("3", "pointwise", "1.0"),
    ]
    text = paths["markdown"].read_text()
    assert "| 1 | pairwise | 0.1 | 0.1 | 95.00 [94.00, 96.00] | 0.00 | 3 |" in text
    assert "| 1 | pointwise | 0.1 | 85.00 | n/a |" in text  # columns β=1, β=0.1 (not run)


@pytest.mark.ray
@pytest.mark.slow
def test_raydaa_toy_end_to_end(ray_cluster, tmp_path, capsys):
    """`raydaa toy --runs 3 --epochs 2` on the reduced grid (2 losses × 2 sizes × lr 0.1,
    β {1, 0.1}):
    4 Tune trials; the report carries the same numbers as training the config directly."""
    from raydaa.cli import main

    argv = ["toy", "--runs", "3", "--epochs", "2", "--grid", "smoke", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert "Best configuration per (loss, hidden size)" in capsys.readouterr().out
    with open(tmp_path / "toy_grid.csv") as f:
        grid = list(csv.DictReader(f))
    assert len(grid) == 8 and {r["runs"] for r in grid} == {"3"}
    assert {(r["loss"], r["hidden"], r["beta"]) for r in grid} == {
        (loss, h, b) for loss in toy.LOSSES for h in ("1", "3") for b in ("1.0", "0.1")
    }
    direct, _ = toy.train_runs(
        toy.make_triplets(),
        loss="pointwise",
        hidden=1,
        lr=0.1,
        betas=(1.0, 0.1),
        seeds=range(3),
        settings=toy.ToySettings(epochs=2),
    )
    row = next(r for r in grid if (r["loss"], r["hidden"], r["beta"]) == ("pointwise", "1", "0.1"))
    assert math.isclose(float(row["accuracy"]), direct.accuracy[1].double().mean().item())
    assert (tmp_path / "toy.png").stat().st_size > 0
    assert len(list((tmp_path / "toy_best.csv").read_text().splitlines())) == 5

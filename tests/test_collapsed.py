"""raydaa.report.collapsed: trials of one method that trained the same model.

    trial  method  β      lr    probe                       quality  KL
    t1     dpo     0.001  3e-5  P                           0.5375   0.187
    t2     dpo     0.01   3e-5  P · (1 + 1e-6)  same model  0.5375   0.187
    t3     dpo     0.1    3e-5  P + 0.01        different   0.5375   0.187  (equal row, other probe)
    t4     dpo     0.5    3e-5  another vector  different   0.60     0.9
    u1     nca     0.001  3e-5  none            0.55     0.2    equal rows, no records:
    u2     nca     0.01   3e-5  none            0.55     0.2    the fallback groups them
    u3     nca     0.1    3e-5  none            0.55     0.2000001
    e1     external —     —     P               0.5375   0.187  (its own variant: never with dpo)

P = log-probs of 16 probe prompts around -20: |Δ| / (1 + max|P|) is 1e-6 · 20 / 21 for t2
(≤ 1e-4: same) and 0.01 / 21 ≈ 5e-4 for t3 (> 1e-4: different).
"""

import math

import numpy as np
import pytest

from raydaa.report.collapsed import collapsed_groups, same_probe

rng = np.random.default_rng(0)
P = -20 + rng.normal(size=16)
PROBES = {"t1": P, "t2": P * (1 + 1e-6), "t3": P + 0.01, "t4": rng.normal(size=16) - 20,
          "e1": P}  # fmt: skip


def row(trial, method, beta, quality, kl, lr=3e-5):
    return {"trial_id": trial, "method": method, "beta": beta, "lr": lr, "sft_weight": 0.0,
            "status": "finished", "quality": quality, "kl": kl}  # fmt: skip


ROWS = [
    row("t3", "dpo", 0.1, 0.5375, 0.187),
    row("t1", "dpo", 0.001, 0.5375, 0.187),
    row("t4", "dpo", 0.5, 0.60, 0.9),
    row("t2", "dpo", 0.01, 0.5375, 0.187),
    row("u1", "nca", 0.001, 0.55, 0.2),
    row("u2", "nca", 0.01, 0.55, 0.2),
    row("u3", "nca", 0.1, 0.55, 0.2000001),
    row("e1", "external", math.nan, 0.5375, 0.187, lr=math.nan),
    row("f1", "dpo", 0.05, math.nan, math.nan) | {"status": "failed"},
]


def records_for(r):
    probe = PROBES.get(r["trial_id"])
    if probe is None:
        return None
    n = len(probe) + 4  # four validation rows outside the probe batch: NaN probe
    return {
        "prompt_id": np.arange(n),
        "source": np.array(["validation"] * n, dtype=object),
        "verdict": np.ones(n),
        "probe_logp": np.concatenate([probe, np.full(4, np.nan)]),
    }


def test_groups_identical_probes_and_equal_rows():
    groups = collapsed_groups(ROWS, records_for)
    assert [(g.variant, g.trials, g.betas, g.lrs, g.evidence) for g in groups] == [
        ("dpo", ("t1", "t2"), (0.001, 0.01), (3e-5,), "probe_logp"),
        ("nca", ("u1", "u2"), (0.001, 0.01), (3e-5,), "quality and KL"),
    ]
    assert (groups[0].quality, groups[0].kl) == (0.5375, 0.187)


def test_probe_tolerance():
    keys = [("validation", i) for i in range(16)]
    p = dict(zip(keys, P, strict=True))
    scale = 1 + np.abs(P).max()
    assert same_probe(p, {k: v + 0.9e-4 * scale for k, v in p.items()})
    assert not same_probe(p, {k: v + 1.1e-4 * scale for k, v in p.items()})
    assert not same_probe(p, dict(list(p.items())[:-1]))  # other probe prompts: not comparable
    assert same_probe(p, {k: v + 1e-3 for k, v in p.items()}, tolerance=1e-3)


def test_different_probe_beats_equal_metrics():
    """t3's row equals t1's, but its probe differs: the probe decides."""
    (dpo, _) = collapsed_groups(ROWS, records_for)
    assert "t3" not in dpo.trials and "t4" not in dpo.trials


def test_nothing_collapses_without_a_match():
    assert collapsed_groups([r for r in ROWS if r["trial_id"] in ("t1", "t3", "t4")],
                            records_for) == []  # fmt: skip
    with_rows_only = collapsed_groups(ROWS, None)  # no records: the fallback everywhere
    assert [g.trials for g in with_rows_only] == [("t1", "t2", "t3"), ("u1", "u2")]
    assert all(g.evidence == "quality and KL" for g in with_rows_only)


@pytest.mark.parametrize("tolerance, expected", [(1e-4, ("t1", "t2")), (1e-3, ("t1", "t2", "t3"))])
def test_tolerance_is_a_parameter(tolerance, expected):
    groups = collapsed_groups(ROWS, records_for, tolerance=tolerance)
    assert groups[0].trials == expected


def test_configurations_closer_than_a_tenth_of_the_seed_distance_are_one_model():
    """NCA at lr 3e-5: β 0.001 (probe P), β 0.1 (P + 0.05: |Δ| / (1 + ~21) ≈ 2.3e-3, far
    above 1e-4), β 1 (P + 0.5: ≈ 2.2e-2). β 5 ran with seeds 0 and 1, its probes P + 5 and
    P + 5 + 3: the seed distance is 3 / (1 + ~28) ≈ 0.10, a tenth of it ≈ 0.010. So β 0.001
    and 0.1 are one model, β 1 is not; β 5's two seeds are one configuration, never a
    group. Without the replicate nothing groups (strict 1e-4)."""
    probes = {"n1": P, "n2": P + 0.05, "n3": P + 0.5, "n4": P + 5, "n4s1": P + 8}
    rows = [row("n1", "nca", 0.001, 0.57, 0.18), row("n2", "nca", 0.1, 0.5675, 0.186),
            row("n3", "nca", 1.0, 0.5675, 0.19), row("n4", "nca", 5.0, 0.565, 0.11) | {"seed": 0},
            row("n4s1", "nca", 5.0, 0.56, 0.12) | {"seed": 1}]  # fmt: skip

    def records(r):
        probe = probes[r["trial_id"]]
        return {"prompt_id": np.arange(16), "source": np.array(["validation"] * 16, dtype=object),
                "verdict": np.ones(16), "probe_logp": probe}  # fmt: skip

    groups = collapsed_groups(rows, records)
    assert [(g.variant, g.trials, g.betas) for g in groups] == [("nca", ("n1", "n2"), (0.001, 0.1))]
    assert groups[0].evidence.startswith("probe_logp within 0.1 x the seed distance 0.1")
    assert collapsed_groups([r for r in rows if r["trial_id"] != "n4s1"], records) == []

"""raydaa.report.comparisons on hand-made rows and per-prompt records (no store, no Ray).

    trial  variant   β      lr    seed  quality  KL    records (N = 300 prompts)
    d1     dpo       0.1    1e-6  0     0.70     3.0   BETTER: BASE with 25% of its non-wins made wins
    d1s    dpo       0.1    1e-6  1     0.66     2.8   BETTER2: BASE with 15% made wins (d1's seed 1)
    d2     dpo       0.01   1e-6  0     0.60     0.5   BASE
    s1     simpo     1.0    6e-7  0     0.62     1.0   BASE, prompt 7 not judged
    n1     nca       0.001  1e-6  0     0.65     0.8   WORSE: BASE with 25% of its wins made losses,
                                                       prompt 3 not judged
    n2     nca       0.01   1e-6  0     0.55     0.3   none (an older store)
    o1     orpo+sft  1.0    1e-6  0     0.90     0.2   BASE (single stage: never pooled)
    x      external  —      —     —     0.95     0.1   BASE (never pooled)

Best per variant: dpo d1 (+ d1s, its seed 1), simpo s1, orpo+sft o1, nca n1, external x.
Pooled two-stage pairwise: dpo + simpo -> d1; pointwise: nca -> n1.
"""

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from raydaa.report import comparisons as cmp
from raydaa.report.analysis import analyse
from raydaa.report.paired import holm, paired_difference
from raydaa.report.select import kind_of, variant_order

N = 300
R = 2000
OPTIONS = cmp.Options(resamples=R)
rng = np.random.default_rng(0)
BASE = rng.choice([0.0, 0.5, 1.0], size=N, p=[0.45, 0.1, 0.45])
BETTER = np.where((BASE < 1) & (rng.random(N) < 0.25), 1.0, BASE)
BETTER2 = np.where((BASE < 1) & (rng.random(N) < 0.15), 1.0, BASE)
WORSE = np.where((BASE == 1) & (rng.random(N) < 0.25), 0.0, BASE)


def row(trial, method, beta, lr, quality, kl, seed=0, sft=0.0):
    return {
        "trial_id": trial, "method": method, "beta": beta, "lr": lr, "lambda_": 1.0,
        "sft_weight": sft, "gamma_beta_ratio": 0.5, "epochs": 1, "normalization": "paper",
        "seed": seed, "status": "finished", "quality": quality, "kl": kl,
    }  # fmt: skip


ROWS = [
    row("d1", "dpo", 0.1, 1e-6, 0.70, 3.0),
    row("d1s", "dpo", 0.1, 1e-6, 0.66, 2.8, seed=1),
    row("d2", "dpo", 0.01, 1e-6, 0.60, 0.5),
    row("s1", "simpo", 1.0, 6e-7, 0.62, 1.0),
    row("n1", "nca", 0.001, 1e-6, 0.65, 0.8),
    row("n2", "nca", 0.01, 1e-6, 0.55, 0.3),
    row("o1", "orpo", 1.0, 1e-6, 0.90, 0.2, sft=1.0),
    row("x", "external", math.nan, math.nan, 0.95, 0.1, seed=None) | {"sft_weight": None},
    row("f1", "dpo", 0.5, 1e-6, math.nan, math.nan) | {"status": "failed"},
]


def with_gap(verdicts, prompt):
    out = verdicts.copy()
    out[prompt] = math.nan
    return out


VERDICTS = {"d1": BETTER, "d1s": BETTER2, "d2": BASE, "s1": with_gap(BASE, 7),
            "n1": with_gap(WORSE, 3), "o1": BASE, "x": BASE}  # fmt: skip


def records_for(r):
    verdicts = VERDICTS.get(r["trial_id"])
    if verdicts is None:
        return None
    cols = {"prompt_id": np.arange(N), "source": np.full(N, "validation"), "verdict": verdicts}
    return pa.table(cols) if r["trial_id"] == "n1" else cols  # both forms are accepted


def by_pair(comparisons):
    return {(c.a, c.b): c for c in comparisons}


def test_external_is_its_own_kind_ordered_last_and_never_pooled():
    assert kind_of("external") == "external"
    assert variant_order(["external", "nca", "orpo+sft", "dpo", "simpo"]) == [
        "dpo", "simpo", "orpo+sft", "nca", "external"]  # fmt: skip
    analysis = analyse(ROWS)
    ext = next(v for v in analysis.variants if v.name == "external")
    assert ext.kind == "external" and ext.best["trial_id"] == "x"
    assert not any(ext.on_kind_front)
    assert set(cmp.pooled_kinds(ROWS)) == {"pairwise", "pointwise"}
    pooled = {k: {r["trial_id"] for r in rows} for k, rows in cmp.pooled_kinds(ROWS).items()}
    assert pooled == {"pairwise": {"d1", "d1s", "d2", "s1", "f1"}, "pointwise": {"n1", "n2"}}


def test_best_pairs_verdicts_holm_and_alignment():
    pairs = cmp.best_pairs(ROWS, records_for, OPTIONS)
    assert [(c.a, c.b) for c in pairs][:4] == [("dpo", "simpo"), ("dpo", "orpo+sft"),
                                               ("dpo", "nca"), ("dpo", "external")]  # fmt: skip
    assert len(pairs) == 10 and all(c.result is not None for c in pairs)
    found = by_pair(pairs)

    dpo_nca = found["dpo", "nca"]
    assert dpo_nca.a_trials == ("d1", "d1s") and dpo_nca.b_trials == ("n1",)
    assert dpo_nca.result.seeds == (2, 1) and dpo_nca.result.n == N - 1  # n1's prompt 3
    keep = np.arange(N) != 3
    expected = (BETTER[keep].mean() + BETTER2[keep].mean()) / 2 - WORSE[keep].mean()
    assert dpo_nca.result.difference == pytest.approx(expected)
    assert dpo_nca.verdict == "A better" and dpo_nca.a_config == "β=0.1, lr=1e-06"

    same = found["simpo", "orpo+sft"]  # the same verdicts: no difference at all
    assert same.result.n == N - 1 and same.result.difference == 0 and same.result.p_value == 1
    assert same.verdict == "indistinguishable"
    nca_simpo = found["simpo", "nca"]  # prompts 3 and 7 each missing on one side
    assert nca_simpo.result.n == N - 2 and nca_simpo.verdict == "A better"
    assert found["nca", "external"].verdict == "B better"

    raw = [c.result.p_value for c in pairs]
    assert [c.p_holm for c in pairs] == pytest.approx(holm(raw))
    assert all(c.p_holm >= c.result.p_value for c in pairs)


def test_one_seed_side_matches_paired_difference():
    """simpo vs external: both one seed, so the comparison is paired_difference itself."""
    c = by_pair(cmp.best_pairs(ROWS, records_for, OPTIONS))["simpo", "external"]
    keep = np.arange(N) != 7
    direct = paired_difference(BASE[keep], BASE[keep], resamples=R)
    assert c.result == direct and c.verdict == "indistinguishable"


def test_matched_kl_picks_each_variants_best_under_the_budget():
    matched = cmp.matched_kl(ROWS, records_for, budgets=[1.0, 0.4, 0.25], options=OPTIONS)
    at = {b: by_pair(c for c in matched if c.budget == b) for b in (1.0, 0.4, 0.25)}
    c = at[1.0]["dpo", "nca"]
    assert c.family == "KL ≤ 1" and c.a_trials == ("d2",) and c.b_trials == ("n1",)
    assert c.a_config == "β=0.01, lr=1e-06" and c.result.seeds == (1, 1)
    assert at[1.0]["dpo", "simpo"].b_trials == ("s1",)
    # KL ≤ 0.4: nca's best is n2, whose records are missing: said, not raised
    missing = at[0.4]["orpo+sft", "nca"]
    assert missing.result is None and missing.verdict == "skipped"
    assert "no per-prompt records for trial n2" in missing.reason
    # KL ≤ 0.25: no dpo trial qualifies
    assert at[0.25]["dpo", "external"].reason == "dpo: no finished trial with KL ≤ 0.25"
    assert at[0.25]["orpo+sft", "external"].result is not None
    for budget in (1.0, 0.4, 0.25):  # Holm within each budget
        family = [c for c in matched if c.budget == budget]
        raw = [c.result.p_value if c.result else math.nan for c in family]
        assert [c.p_holm for c in family] == pytest.approx(holm(raw), nan_ok=True)


def test_default_budgets_are_kl_quartiles():
    kls = [r["kl"] for r in ROWS if r["status"] == "finished"]
    assert cmp.kl_budgets(ROWS) == pytest.approx(list(np.quantile(kls, [0.25, 0.5, 0.75])))
    assert cmp.kl_budgets([ROWS[-1]]) == []


def test_pairwise_vs_pointwise_pools_the_two_stage_variants():
    found = cmp.kinds(ROWS, records_for, budgets=[1.0, 0.25], options=OPTIONS)
    overall, at_1, at_025 = found
    assert (overall.a, overall.b) == ("pairwise", "pointwise")
    assert overall.a_trials == ("d1", "d1s") and overall.b_trials == ("n1",)  # not o1, not x
    assert overall.a_config == "dpo: β=0.1, lr=1e-06" and overall.verdict == "A better"
    # KL ≤ 1: d2 (0.60, KL 0.5) and s1 (0.62, KL 1.0) qualify; s1 is better
    assert at_1.a_trials == ("s1",) and at_1.budget == 1.0
    assert at_1.a_config == "simpo: β=1, lr=6e-07, γ/β=0.5"
    assert at_025.reason == "pairwise and pointwise: no finished two-stage trial with KL ≤ 0.25"
    assert [overall.p_holm, at_1.p_holm] == pytest.approx(
        holm([overall.result.p_value, at_1.result.p_value]))  # fmt: skip


def test_compare_variants_one_pair():
    found = cmp.compare_variants(ROWS, "nca", "dpo", records_for, [1.0], OPTIONS)
    assert [(c.family, c.a, c.b) for c in found] == [("best", "nca", "dpo"), ("KL ≤ 1", "nca", "dpo")]
    assert found[0].verdict == "B better" and found[0].p_holm == found[0].result.p_value
    with pytest.raises(KeyError, match="no variant 'kto'.*'dpo'"):
        cmp.compare_variants(ROWS, "kto", "dpo", records_for)


def test_records_missing_everywhere_say_so():
    pairs = cmp.best_pairs(ROWS, None, OPTIONS)
    assert all(c.verdict == "skipped" and c.reason == cmp.NO_LOADER for c in pairs)
    partial = by_pair(cmp.best_pairs(ROWS, lambda r: None if r["trial_id"] == "d1s"
                                     else records_for(r), OPTIONS))["dpo", "nca"]  # fmt: skip
    assert partial.a_trials == ("d1",) and partial.result.seeds == (1, 1)
    assert "left out: no per-prompt records for trial d1s" in partial.note


def test_a_broken_records_file_is_a_reason():
    def broken(r):
        if r["trial_id"] == "n1":
            raise OSError("n1.parquet: not a Parquet file")
        if r["trial_id"] == "s1":
            return {"prompt_id": np.array([1, 1]), "verdict": np.array([1.0, 0.0])}
        return records_for(r)

    found = by_pair(cmp.best_pairs(ROWS, broken, OPTIONS))
    assert "could not be read: n1.parquet: not a Parquet file" in found["dpo", "nca"].reason
    assert "records of trial s1: prompt(s) [('validation', 1)] listed more than once" in (
        found["dpo", "simpo"].reason)  # fmt: skip


def test_seed_spread():
    """d1 and d1s are one configuration; two external checkpoints are never replicates."""
    other = row("y", "external", math.nan, math.nan, 0.5, 0.3, seed=None) | {"sft_weight": None}
    (spread,) = cmp.seed_spread([*ROWS, other])
    assert (spread.variant, spread.config, spread.trials, spread.seeds) == (
        "dpo", "β=0.1, lr=1e-06", ("d1", "d1s"), (0, 1))  # fmt: skip
    assert spread.mean == pytest.approx(0.68) and spread.sd == pytest.approx(0.02 * math.sqrt(2))
    assert (spread.min, spread.max) == (0.66, 0.70)


class LongerWins:
    """A judge that prefers the longer answer (ties half) and keeps what it was given."""

    def __init__(self):
        self.prompts = None

    def compare(self, prompts, candidates, baselines):
        self.prompts = prompts
        return [1.0 if len(c) > len(b) else 0.0 if len(c) < len(b) else 0.5
                for c, b in zip(candidates, baselines, strict=True)]  # fmt: skip


def test_head_to_head_judges_a_against_b():
    """30 prompts: A longer on 20, equal on 5, shorter on 5 -> A preferred on
    (20 + 2.5) / 30 = 0.75, i.e. +0.25 from 0.5. A has one more prompt (id 99) than B."""
    lengths_b = [3] * 30
    lengths_a = [5] * 20 + [3] * 5 + [1] * 5
    prompts = [json.dumps(f"sort {i}") for i in range(29)] + [
        json.dumps([{"role": "user", "content": "reverse 1 2"}])]  # fmt: skip

    def records(lengths, extra):
        ids = list(range(30)) + ([99] if extra else [])
        return {
            "prompt_id": np.array(ids),
            "source": np.array(["validation"] * len(ids), dtype=object),
            "prompt": np.array(prompts + ([json.dumps("x")] if extra else []), dtype=object),
            "policy_text": np.array(["a" * n for n in lengths] + (["zz"] if extra else []),
                                    dtype=object),
        }  # fmt: skip

    judge = LongerWins()
    r = cmp.head_to_head(judge, records(lengths_a, True), records(lengths_b, False), OPTIONS)
    assert r.n == 30 and r.difference == pytest.approx(0.25)
    assert r.p_value < 0.01 and r.low > 0
    assert judge.prompts[0] == "sort 0" and judge.prompts[-1] == [{"role": "user", "content": "reverse 1 2"}]

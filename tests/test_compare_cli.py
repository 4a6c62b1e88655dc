"""`raydaa compare` and the report's paired section, on a store written with write_row and
per-prompt records written with pyarrow at <results>/<scenario>/prompts/<method>/<trial>.parquet.

The tiny scenario's task (its gold judge grades the answers): 40 prompts "sort <digits>".

    trial  method  β     lr    quality  KL   records
    d1     dpo     0.1   1e-6  0.70     2.0  wins 36 of 40 (its answers are right)
    d2     dpo     0.01  1e-6  0.50     0.4  wins 20, ties 0 (right on the first 20 prompts)
    n1     nca     0.1   1e-6  0.50     0.5  the same verdicts and answers as d2
    n2     nca     0.01  1e-6  0.40     0.3  none (an older trial)
    x      external —    —     0.45     0.2  none

A − B for dpo vs nca (d1 vs n1): 36/40 - 20/40 = +0.40; at KL ≤ 0.5: d2 vs n1, identical.
"""

import csv
import json
import math
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raydaa.cli import SUBCOMMANDS
from raydaa.cli.compare import main
from raydaa.io.results_store import write_row
from raydaa.report.build import build_report

N = 40
rng = random.Random(0)
DIGITS = [[str(rng.randrange(10)) for _ in range(5)] for _ in range(N)]
PROMPTS = [f"sort {' '.join(d)}" for d in DIGITS]
RIGHT = [" ".join(sorted(d)) for d in DIGITS]
WRONG = [" ".join(d[::-1]) + " 9" for d in DIGITS]  # reversed, one digit too many

ROWS = [("d1", "dpo", 0.1, 1e-6, 0.70, 2.0), ("d2", "dpo", 0.01, 1e-6, 0.50, 0.4),
        ("n1", "nca", 0.1, 1e-6, 0.50, 0.5), ("n2", "nca", 0.01, 1e-6, 0.40, 0.3),
        ("x", "external", math.nan, math.nan, 0.45, 0.2)]  # fmt: skip
RIGHT_ON = {"d1": 36, "d2": 20, "n1": 20}


def store_row(trial, method, beta, lr, quality, kl):
    return {
        "trial_id": trial, "scenario": "tiny", "method": method, "beta": beta, "lr": lr,
        "lambda_": 1.0, "sft_weight": 0.0 if method != "external" else None,
        "gamma_beta_ratio": 0.5, "epochs": 1, "normalization": "paper", "seed": 0,
        "status": "finished", "quality": quality, "quality_low": quality - 0.1,
        "quality_high": quality + 0.1, "kl": kl, "kl_low": kl * 0.8, "kl_high": kl * 1.2,
    }  # fmt: skip


def records(trial):
    """Right answers on the first RIGHT_ON[trial] prompts (wins), wrong ones after (losses)."""
    k = RIGHT_ON[trial]
    texts = RIGHT[:k] + WRONG[k:]
    return pa.table({
        "prompt_id": pa.array(range(N), pa.int64()),
        "source": ["validation"] * N,
        "prompt": [json.dumps(p) for p in PROMPTS],
        "policy_text": texts,
        "baseline_text": [" ".join(d) for d in DIGITS],
        "policy_tokens": pa.array([5] * N, pa.int64()),
        "baseline_tokens": pa.array([5] * N, pa.int64()),
        "verdict": [1.0] * k + [0.0] * (N - k),
        "kl_k1": [0.1] * N,
        "kl_k3": [0.1] * N,
        "probe_logp": [-10.0 - i - (0.5 if trial == "d1" else 0.0) for i in range(N)],
    })  # fmt: skip


@pytest.fixture
def results(tmp_path):
    for spec in ROWS:
        write_row(tmp_path, "tiny", store_row(*spec))
    for trial, method in (("d1", "dpo"), ("d2", "dpo"), ("n1", "nca")):
        path = tmp_path / "tiny" / "prompts" / method / f"{trial}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(records(trial), path)
    return tmp_path


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_compare_registered():
    assert SUBCOMMANDS["compare"][0] == "raydaa.cli.compare:main"


def test_compare_prints_the_pair_and_writes_json(results, tmp_path, capsys):
    out = tmp_path / "dpo_nca.json"
    argv = ["dpo", "nca", "--results", str(results), "--budgets", "0.5,0.35", "--resamples",
            "2000", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "dpo vs nca, scenario tiny" in text
    assert "A  dpo: β=0.1, lr=1e-06 (trial d1), quality 0.900" in text
    assert "B  nca: β=0.1, lr=1e-06 (trial n1), quality 0.500" in text
    assert "best vs best: A − B = +0.400 [" in text and "verdict: dpo better" in text
    assert "KL ≤ 0.5: A β=0.01, lr=1e-06 vs B β=0.1, lr=1e-06: A − B = +0.000" in text
    assert "KL ≤ 0.35: skipped: dpo: no finished trial with KL ≤ 0.35" in text
    payload = json.loads(out.read_text())
    best = payload["best"]
    assert best["result"]["difference"] == pytest.approx(0.4)
    assert best["verdict"] == "A better" and best["a_trials"] == ["d1"]
    assert best["result"]["p_value"] < 0.001
    assert [c["budget"] for c in payload["matched_kl"]] == [0.5, 0.35]
    assert payload["matched_kl"][1]["result"] is None and payload["head_to_head"] is None


def test_compare_head_to_head_with_the_gold_judge(results, capsys):
    """d1's answers against n1's: right vs wrong on prompts 20-35 (d1 wins), both right on
    0-19 (ties), both wrong on 36-39 (the same wrong text: ties): 16 wins, 24 ties ->
    0.5 + 16/40 · 0.5 = 0.7."""
    assert main(["dpo", "nca", "--results", str(results), "--head-to-head",
                 "--resamples", "2000"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "head to head (A's samples judged against B's): A preferred on 0.700 of 40 prompts" in text


def test_compare_says_what_is_missing(results, capsys):
    assert main(["nca", "external", "--results", str(results), "--budgets", "1"]) == 1
    text = capsys.readouterr().out
    assert "best vs best: skipped: no per-prompt records for trial x (external" in text
    assert main(["dpo", "kto", "--results", str(results)]) == 1
    err = capsys.readouterr().err
    assert "no variant 'kto'" in err and "'external'" in err
    assert main(["dpo", "nca", "--results", str(results / "none")]) == 1
    assert "no results for scenario 'tiny'" in capsys.readouterr().err


def test_report_reads_the_stored_records(results):
    """build_report's default loader reads prompts/<method>/<trial>.parquet."""
    written = build_report(results, "tiny", plotly_js="cdn")
    out = results / "tiny" / "report"
    assert {"comparisons.csv", "matched_kl.csv", "collapsed.csv"} <= {p.rsplit("/", 1)[1]
                                                                      for p in written}  # fmt: skip
    comparisons = {(r["family"], r["a"], r["b"], r["budget"]): r
                   for r in read_csv(out / "comparisons.csv")}  # fmt: skip
    dpo_nca = comparisons["best", "dpo", "nca", ""]
    assert float(dpo_nca["difference"]) == pytest.approx(0.4) and dpo_nca["verdict"] == "A better"
    external = comparisons["best", "dpo", "external", ""]
    assert external["verdict"] == "skipped"
    assert "no per-prompt records for trial x" in external["reason"]
    kinds = comparisons["pairwise vs pointwise", "pairwise", "pointwise", ""]
    assert (kinds["a_trials"], kinds["b_trials"]) == ("d1", "n1")
    assert kinds["verdict"] == "A better"
    markdown = (out / "report.md").read_text()
    assert "## Is the difference real? Paired comparisons" in markdown
    assert "Per-prompt records found for 3 of 5 finished trials (first missing: no per-prompt records for trial " in markdown
    assert "| dpo (β=0.1, lr=1e-06) | nca (β=0.1, lr=1e-06) | 0.900 vs 0.500 | +0.400 [" in markdown
    # d2 and n1: the same probe log-probs, quality and KL differ only in the row: one model
    collapsed = read_csv(out / "collapsed.csv")
    assert collapsed == []  # different variants never collapse together
    assert "## Failed and diverged trials" in markdown


def test_report_with_injected_records(results, tmp_path):
    """records_for overrides the stored records: here every trial has the same verdicts, so
    every pair is indistinguishable, and the two dpo trials share a probe: one model."""
    same = records("d2")

    written = build_report(results, "tiny", tmp_path / "out", plotly_js="cdn",
                           records_for=lambda row: same)  # fmt: skip
    out = tmp_path / "out"
    assert str(out / "report.md") == written[-1]
    rows = [r for r in read_csv(out / "comparisons.csv") if r["verdict"] != "skipped"]
    assert len(rows) == 3 + 1 + 2  # 3 pairs; pooled kinds overall and at 2 of 3 budgets
    assert all(r["verdict"] == "indistinguishable" and r["p_holm"] == "1.0" for r in rows)
    matched = read_csv(out / "matched_kl.csv")
    assert {r["budget"] for r in matched} == {str(b) for b in np.quantile([2.0, 0.4, 0.5, 0.3, 0.2], [0.25, 0.5, 0.75])}
    collapsed = read_csv(out / "collapsed.csv")
    assert [(r["method"], r["trials"], r["beta_min"], r["beta_max"]) for r in collapsed] == [
        ("dpo", "d2;d1", "0.01", "0.1"), ("nca", "n2;n1", "0.01", "0.1")]  # fmt: skip
    markdown = (out / "report.md").read_text()
    assert "| dpo | 0.01 – 0.1 | 1e-06 | d2, d1 |" in markdown
    assert "No configuration was trained with more than one seed." in markdown

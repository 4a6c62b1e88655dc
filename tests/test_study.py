"""`raydaa study`: each question's composition on a fake sweep runner (no Ray).

The fake runner writes real results-store rows whose quality is a function of the
configuration given by each test, and registers references the way raydaa.train.stages.run_sft
does; the study code under test decides what to run, reads the store back and builds the
tables. Expected values are computed by hand in each docstring. Search spaces are a test
copy with small grids, so the tests do not follow the shipped tiny grids.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import uuid

import pytest
import yaml

from raydaa.cli.study import main as study_main
from raydaa.config.scenario import load_scenario, search_spaces_dir
from raydaa.io import storage
from raydaa.io.results_store import read_store, write_row
from raydaa.study import rq1, rq2, rq3, rq4
from raydaa.study.runner import (
    BASE,
    MAIN,
    Study,
    StudyError,
    Sweep,
    reference_path,
    same_config,
    sft_namespace,
    smoke_space,
)


@pytest.fixture
def spaces(tmp_path, monkeypatch):
    """raydaa/search_spaces/ with small tiny grids: two-stage β x lr below, single-stage setups:
    base_init λ {0.5, 1} x lr {1e-3, 2e-3} x epochs {1, 2}; sft_init λ {0.5, 1} x lr {1e-4};
    sft_init_align_only lr {1e-4, 3e-4}."""
    root = tmp_path / "search_spaces"
    shutil.copytree(search_spaces_dir(), root)
    tiny_path = root / "scenarios" / "tiny.yaml"
    tiny = yaml.safe_load(tiny_path.read_text())
    tiny["judge"]["baseline"] = "sft_policy"
    tiny_path.write_text(yaml.safe_dump(tiny))
    grids = {
        "dpo": {"betas": [0.1, 0.5], "lrs": [1e-5, 1e-4]},
        "nca": {"betas": [0.1, 0.5], "lrs": [1e-5, 1e-4]},
        "orpo": {"betas": [0.1, 0.5, 1.0, 2.0], "lrs": [1e-5, 1e-4]},
        "asft": {"betas": [0.1, 0.5, 1.0, 2.0], "lrs": [1e-5, 1e-4]},
    }
    for method, grid in grids.items():
        path = root / "methods" / f"{method}.yaml"
        data = yaml.safe_load(path.read_text())
        data["scenarios"]["tiny"] = grid
        path.write_text(yaml.safe_dump(data))
    setups = {
        "base_init": {"lambdas": [0.5, 1.0], "lrs": [1e-3, 2e-3], "epochs": [1, 2]},
        "sft_init": {"lambdas": [0.5, 1.0], "lrs": [1e-4]},
        "sft_init_align_only": {"lrs": [1e-4, 3e-4]},
    }
    for method in ("orpo", "asft"):
        path = root / "single_stage" / f"{method}.yaml"
        data = yaml.safe_load(path.read_text())
        for setup, grid in setups.items():
            data["setups"][setup]["scenarios"] = {"tiny": grid}
        path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("RAYDAA_SEARCH_SPACES", str(root))
    return root


class FakeRunner:
    """Writes one finished row per configuration, quality from `quality(scenario name,
    config) -> (quality, half-width, kl)`; references as run_sft registers them."""

    def __init__(self, quality, reference_quality=None, write=True):
        self.quality, self.reference_quality, self.write = quality, reference_quality, write
        self.runs: list[tuple[str, str, list[dict]]] = []
        self.trained: list[tuple[str, str, float | None]] = []
        self.evaluated: list[str] = []

    def train_reference(self, scenario, results, *, init, fraction):
        record = {
            "init": init,
            "fraction": None if init == "base" else fraction,
            "seed": scenario.seed,
            "scenario": scenario.name,
            "path": f"/fake/{scenario.name}/{init}{fraction}",
        }
        storage.write_text(reference_path(results, scenario.name), json.dumps(record))
        self.trained.append((scenario.name, init, fraction))
        return record

    def run_configs(self, scenario, results, configs, name):
        self.runs.append((scenario.name, name, [dict(c) for c in configs]))
        for config in configs if self.write else []:
            q, half, kl = self.quality(scenario.name, config)
            write_row(
                results,
                scenario.name,
                config
                | {
                    "trial_id": uuid.uuid4().hex[:8],
                    "scenario": scenario.name,
                    "seed": scenario.seed,
                    "status": "finished" if q is not None else "failed",
                    "error": "" if q is not None else "boom",
                    "quality": q,
                    "quality_low": None if q is None else q - half,
                    "quality_high": None if q is None else q + half,
                    "kl": kl,
                    "kl_low": kl,
                    "kl_high": kl,
                },
            )

    def evaluate_reference(self, scenario, record):
        self.evaluated.append(scenario.name)
        q = self.reference_quality(scenario.name)
        return {"quality": q, "quality_low": q - 0.05, "quality_high": q + 0.05, "kl": 0.0}


def study(tmp_path, runner, **kwargs) -> Study:
    return Study(
        load_scenario("tiny"), str(tmp_path / "results"), runner, log=lambda _: None, **kwargs
    )


def read_csv(path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(open(path).read())))


# -- pure helpers ---------------------------------------------------------------------------


def test_same_config_matches_floats_to_1e9_and_missing_values_together():
    config = {"method": "dpo", "beta": 0.1, "lr": 1e-5, "lambda_": 1.0, "sft_weight": 0.0,
              "gamma_beta_ratio": None, "epochs": 1, "normalization": "paper"}  # fmt: skip
    assert same_config(config | {"beta": 0.1 * (1 + 1e-12), "gamma_beta_ratio": math.nan}, config)
    assert not same_config(config | {"beta": 0.1 * (1 + 1e-6)}, config)
    assert not same_config(config | {"gamma_beta_ratio": 0.5}, config)
    assert not same_config(config | {"epochs": 2}, config)


def test_smoke_space_keeps_two_largest_betas_up_to_one_and_the_largest_lr(spaces):
    from raydaa.config.search_space import load_method_space

    orpo = smoke_space(load_method_space("orpo", "tiny"))
    assert (orpo.betas, orpo.lrs) == ([0.5, 1.0], [1e-4])
    base = smoke_space(load_method_space("orpo", "tiny", "base_init"))
    assert (base.lambdas, base.lrs, base.epochs, base.size) == ([1.0], [2e-3], [1], 1)


def test_sft_namespaces_are_named_by_percent():
    assert [sft_namespace(f).label for f in (0.01, 0.03, 0.1, 1.0)] == [
        "sft1pct", "sft3pct", "sft10pct", "sft100pct"]  # fmt: skip
    with pytest.raises(ValueError, match=r"\[0.01, 1\]"):
        sft_namespace(0.005)


def test_tempering_gain_hand_computed():
    """β = 1: best lr gives 0.55 ± 0.03; β < 1: best is 0.70 ± 0.04 (β = 0.1); β = 2 at 0.80 is
    not tempering and is ignored. Gain = 0.70 - 0.55 = 0.15, half-width sqrt(0.03² + 0.04²)
    = 0.05, so [0.10, 0.20]."""

    def row(beta, lr, q, half):
        return {"trial_id": f"{beta}-{lr}", "status": "finished", "beta": beta, "lr": lr,
                "quality": q, "quality_low": q - half, "quality_high": q + half, "kl": 1.0}  # fmt: skip

    rows = [row(1.0, 1e-5, 0.50, 0.03), row(1.0, 1e-4, 0.55, 0.03), row(0.5, 1e-5, 0.60, 0.04),
            row(0.1, 1e-4, 0.70, 0.04), row(2.0, 1e-5, 0.80, 0.04)]  # fmt: skip
    gain = rq2.tempering_gain("orpo", rows)
    assert (gain["lr_at_beta1"], gain["best_beta"], gain["lr_at_best_beta"]) == (1e-4, 0.1, 1e-4)
    assert gain["gain"] == pytest.approx(0.15)
    assert (gain["gain_low"], gain["gain_high"]) == (pytest.approx(0.10), pytest.approx(0.20))
    assert rq2.tempering_gain("orpo", rows[:2])["gain"] is None  # no β < 1: no gain


# -- RQ2 then RQ3: stages, shared sweeps, resume ---------------------------------------------

RQ2_QUALITY = {  # (β, lr) -> quality; half-width 0.03 at β = 1, else 0.04
    (1.0, 1e-5): 0.50, (1.0, 1e-4): 0.55, (0.5, 1e-5): 0.60, (0.5, 1e-4): 0.58,
    (0.1, 1e-5): 0.62, (0.1, 1e-4): 0.70, (2.0, 1e-5): 0.80, (2.0, 1e-4): 0.40,
}  # fmt: skip


def rq2_quality(name, config):
    q = RQ2_QUALITY[config["beta"], config["lr"]] - (0.1 if config["method"] == "asft" else 0)
    return q, 0.03 if config["beta"] == 1.0 else 0.04, 10 * config["lr"] / config["beta"]


def test_rq2_runs_beta1_then_the_sweep_and_rq3_reuses_both(spaces, tmp_path):
    """Stage 1: β = 1 x 2 lrs x 2 methods = 4 trials; stage 2: β ∈ {0.1, 0.5, 2} x 2 lrs x 2
    methods = 12. ORPO: gain 0.70 - 0.55 = 0.15 ± sqrt(0.03² + 0.04²) = 0.05; ASFT is ORPO
    - 0.1 everywhere, so the same gain from 0.45 to 0.60."""
    runner = FakeRunner(rq2_quality)
    s = study(tmp_path, runner)
    written = rq2.run(s)
    assert runner.trained == [("tiny", "sft", 1.0)]  # the main namespace's SFT, once
    (_, first, stage1), (_, second, stage2) = runner.runs
    assert (first, second) == ("rq2-beta1", "rq2-beta-sweep")
    assert sorted((c["method"], c["beta"], c["lr"]) for c in stage1) == [
        (m, 1.0, lr) for m in ("asft", "orpo") for lr in (1e-5, 1e-4)]  # fmt: skip
    assert len(stage2) == 12 and all(c["beta"] != 1.0 for c in stage2)
    out = tmp_path / "results" / "tiny" / "study" / "rq2"
    gains = {r["method"]: r for r in read_csv(out / "tempering_gain.csv")}
    assert float(gains["orpo"]["quality_beta1"]) == pytest.approx(0.55)
    assert float(gains["asft"]["quality_best"]) == pytest.approx(0.60)
    for method in ("orpo", "asft"):
        assert float(gains[method]["gain"]) == pytest.approx(0.15)
        assert float(gains[method]["gain_low"]) == pytest.approx(0.10)
        assert float(gains[method]["gain_high"]) == pytest.approx(0.20)
        assert float(gains[method]["best_beta"]) == 0.1
    assert {p.rsplit("/", 1)[1] for p in written} >= {
        "rq2.md", "tempering_gain.csv", "beta_sensitivity.png", "beta_sensitivity.html"}  # fmt: skip
    assert "0.150 [0.100, 0.200] (interval excludes 0)" in (out / "rq2.md").read_text()

    rq2.run(s)  # resumable: every configuration has its row
    rq3.run(s, methods=("orpo", "asft"))  # RQ3's ORPO/ASFT grids = RQ2's two stages
    assert len(runner.runs) == 2
    assert len(read_store(s.results, "tiny")) == 16
    summary = {r["method"]: r for r in read_csv(tmp_path / "results/tiny/study/rq3/summary.csv")}
    assert float(summary["orpo"]["quality"]) == pytest.approx(0.80)  # β = 2 counts in RQ3
    assert summary["asft"]["total"] == "8"
    assert (tmp_path / "results/tiny/study/rq3/pareto_kinds.png").exists()


def test_rq3_joint_front_counts_points_per_kind(spaces, tmp_path):
    """Best-lr-per-β points (quality, KL): dpo β=0.1 (0.6, 1.0), β=0.5 (0.5, 0.5); nca β=0.1
    (0.4, 0.2), β=0.5 (0.55, 2.0). Dominated: nca (0.55, 2.0) by dpo (0.6, 1.0). Joint front:
    pairwise 2 of 2, pointwise 1 of 2."""
    points = {("dpo", 0.1): (0.6, 1.0), ("dpo", 0.5): (0.5, 0.5),
              ("nca", 0.1): (0.4, 0.2), ("nca", 0.5): (0.55, 2.0)}  # fmt: skip

    def quality(name, config):
        q, kl = points[config["method"], config["beta"]]
        return (q, 0.01, kl) if config["lr"] == 1e-4 else (q - 0.1, 0.01, kl)

    s = study(tmp_path, FakeRunner(quality))
    rq3.run(s, methods=("dpo", "nca"))
    page = (tmp_path / "results/tiny/study/rq3/rq3.md").read_text()
    assert "| pairwise | 2 | 2 |" in page and "| pointwise | 1 | 2 |" in page


class RecordingRunner(FakeRunner):
    """FakeRunner whose trials also leave per-prompt records: of 100 prompts, a trial of
    quality q wins the first round(100 q) and loses the rest; probe log-probs are the
    trial's own (no two trials collapse)."""

    def run_configs(self, scenario, results, configs, name):
        super().run_configs(scenario, results, configs, name)
        from raydaa.io.prompt_records import read_records, write_records

        for row in read_store(results, scenario.name).to_pylist():
            if row["status"] != "finished" or read_records(
                results, scenario.name, row["method"], row["trial_id"]
            ) is not None:
                continue
            wins = round(100 * row["quality"])
            offset = int(row["trial_id"], 16) % 1000
            write_records(results, scenario.name, row["method"], row["trial_id"], [
                {"prompt_id": i, "source": "validation", "prompt": json.dumps(f"p{i}"),
                 "policy_text": "a", "baseline_text": "b", "policy_tokens": 1,
                 "baseline_tokens": 1, "verdict": 1.0 if i < wins else 0.0, "kl_k1": row["kl"],
                 "kl_k3": row["kl"], "probe_logp": -1.0 - i - offset}
                for i in range(100)
            ])  # fmt: skip


def test_rq3_page_says_which_differences_are_real(spaces, tmp_path):
    """dpo's best (β 0.1, lr 1e-4) wins 90 of 100 prompts, nca's best 50: the paired
    difference is +0.40 (the same 50 prompts won by both, 40 more by dpo), a sign-flip p of
    about 2^-40, so "dpo better than nca"; pooled, pairwise (dpo) beats pointwise (nca)."""
    points = {("dpo", 0.1): (0.9, 1.0), ("dpo", 0.5): (0.6, 0.5),
              ("nca", 0.1): (0.5, 0.2), ("nca", 0.5): (0.45, 2.0)}  # fmt: skip

    def quality(name, config):
        q, kl = points[config["method"], config["beta"]]
        return (q, 0.05, kl) if config["lr"] == 1e-4 else (q - 0.1, 0.05, kl)

    rq3.run(study(tmp_path, RecordingRunner(quality)), methods=("dpo", "nca"))
    page = (tmp_path / "results/tiny/study/rq3/rq3.md").read_text()
    assert "Of the 1 pair of best configurations, 1 differ" in page
    assert "**dpo better than nca**: dpo − nca = +0.400" in page
    assert "Pairwise vs pointwise, pooled best against pooled best: pairwise better" in page
    report = (tmp_path / "results/tiny/study/rq3/report.md").read_text()
    assert "**dpo better**" in report  # the study's report read the records too


def test_a_partial_sweep_runs_only_missing_configs_and_failed_ones_on_request(spaces, tmp_path):
    """A first run wrote rows for β = 0.1 only, one of them failed: a re-run runs the two
    β = 0.5 configurations; with retry_failed also the failed one."""
    fail_once = {"left": 1}

    def quality(name, config):
        if config["beta"] == 0.1 and config["lr"] == 1e-5 and fail_once["left"]:
            fail_once["left"] -= 1
            return None, 0.0, None
        return 0.5, 0.01, 1.0

    runner = FakeRunner(quality)
    s = study(tmp_path, runner)
    s.ensure_reference(MAIN)
    configs = rq3.grid(s, "dpo")
    s.execute("t", [Sweep("t/first", MAIN, {"dpo": [c for c in configs if c["beta"] == 0.1]})])
    s.execute("t", [Sweep("t/all", MAIN, {"dpo": configs})])
    assert [(c["beta"], c["lr"]) for c in runner.runs[-1][2]] == [(0.5, 1e-5), (0.5, 1e-4)]
    s.retry_failed = True
    out = s.execute("t", [Sweep("t/all", MAIN, {"dpo": configs})])
    assert [(c["beta"], c["lr"]) for c in runner.runs[-1][2]] == [(0.1, 1e-5)]
    statuses = sorted(r["status"] for r in out["t/all"]["dpo"])
    assert statuses == ["failed"] + ["finished"] * 4


def test_the_done_line_counts_only_this_sweeps_rows(spaces, tmp_path):
    """Another study writes the same namespace while this sweep runs (RQ1 and RQ4 share
    tiny@base): its 3 rows are not this sweep's, which ran 2 configurations."""
    lines = []

    class Busy(FakeRunner):
        def run_configs(self, scenario, results, configs, name):
            others = [c | {"method": "nca", "beta": b} for c in configs[:1] for b in (1, 2, 3)]
            super().run_configs(scenario, results, others + configs, name)

    s = Study(load_scenario("tiny"), str(tmp_path / "r"), Busy(lambda *_: (0.5, 0.01, 1.0)),
              log=lines.append)  # fmt: skip
    s.ensure_reference(MAIN)
    configs = [c for c in rq3.grid(s, "dpo") if c["beta"] == 0.1]
    s.execute("t", [Sweep("t/dpo", MAIN, {"dpo": configs})])
    assert any(line.startswith("[t 1/1] t/dpo: done in") and "2 finished, 0 diverged, 0 failed" in line
               for line in lines), lines  # fmt: skip


def test_a_sweep_that_writes_no_rows_is_an_error(spaces, tmp_path):
    s = study(tmp_path, FakeRunner(rq2_quality, write=False))
    with pytest.raises(StudyError, match=r"2 of 2 configs have no row in .*tiny/store"):
        rq2.run(s, methods=("orpo",))


# -- RQ1 ------------------------------------------------------------------------------------


def rq1_quality(name, config):
    """base init (tiny@base): 0.2 + 0.1·λ·epochs - 100·lr; SFT init alone: 0.6 - 100·lr;
    SFT init with the SFT term: 0.4 + 0.1·λ - 100·lr; ASFT 0.05 below ORPO."""
    lam, epochs, lr = config["lambda_"], config["epochs"], config["lr"]
    if name == "tiny@base":
        q = 0.2 + 0.1 * lam * epochs - 100 * lr
    elif config["sft_weight"] == 0:
        q = 0.6 - 100 * lr
    else:
        q = 0.4 + 0.1 * lam - 100 * lr
    return q - (0.05 if config["method"] == "asft" else 0), 0.02, 1.0


def test_rq1_table1_hand_computed(spaces, tmp_path):
    """Best per row (lr 1e-3 beats 2e-3, 1e-4 beats 3e-4): SFT model 0.35 (its evaluation);
    SFT ORPO 0.6 - 0.01 = 0.59, ASFT 0.54; Base ORPO λ=1, 2 epochs: 0.2 + 0.2 - 0.1 = 0.30,
    ASFT 0.25; SFT ORPO† λ=1: 0.4 + 0.1 - 0.01 = 0.49, ASFT† 0.44. λ x epochs for base
    ORPO: (0.5, 1) 0.15, (0.5, 2) 0.20, (1, 1) 0.20, (1, 2) 0.30."""
    runner = FakeRunner(rq1_quality, reference_quality=lambda name: 0.35)
    s = study(tmp_path, runner)
    rq1.run(s)
    # base model registered in its namespace; the 100% SFT trained once (in the scenario's
    # own namespace) and reused for tiny@sft100pct
    assert runner.trained == [("tiny@base", "base", None), ("tiny", "sft", 1.0)]
    copied = json.loads(open(reference_path(s.results, "tiny@sft100pct")).read())
    assert copied["path"] == "/fake/tiny/sft1.0" and copied["scenario"] == "tiny@sft100pct"
    assert [(name, len(configs)) for name, _, configs in runner.runs] == [
        ("tiny@base", 16), ("tiny@sft100pct", 8)]  # fmt: skip
    assert s.scenario_for(BASE).judge.baseline == "chosen"  # one yardstick across references
    assert runner.evaluated == ["tiny@sft100pct"]
    out = tmp_path / "results/tiny/study/rq1"
    rows = read_csv(out / "table1.csv")
    got = [(r["init"], r["method"], round(float(r["quality"]), 6)) for r in rows]
    assert got == [("Base", "SFT", 0.35), ("SFT", "ORPO", 0.59), ("SFT", "ASFT", 0.54),
                   ("Base", "ORPO", 0.30), ("Base", "ASFT", 0.25), ("SFT", "ORPO†", 0.49),
                   ("SFT", "ASFT†", 0.44)]  # fmt: skip
    assert (rows[3]["lambda_"], rows[3]["epochs"], rows[3]["lr"]) == ("1.0", "2", "0.001")
    assert (rows[1]["finished"], rows[1]["total"]) == ("2", "2")
    grid = [(r["method"], r["lambda_"], r["epochs"], round(float(r["quality"]), 6))
            for r in read_csv(out / "lambda_epochs.csv") if r["method"] == "orpo"]  # fmt: skip
    assert grid == [("orpo", "0.5", "1", 0.15), ("orpo", "0.5", "2", 0.2),
                    ("orpo", "1.0", "1", 0.2), ("orpo", "1.0", "2", 0.3)]  # fmt: skip
    assert "**0.590 [0.570, 0.610]**" in (out / "rq1.md").read_text()
    rq1.run(s)  # resumable: nothing new runs, the reference is not evaluated twice
    assert len(runner.runs) == 2 and runner.evaluated == ["tiny@sft100pct"]


def test_rq1_dpo_row_is_rq3s_best_dpo_from_the_sft_model_and_rq4_reuses_it(spaces, tmp_path):
    """RQ3 (tiny): DPO quality 0.5 + β·lr·1000, best β 0.5 lr 1e-4 (0.55). Before RQ3's DPO
    grid is complete Table 1 has no DPO row; after, one DPO trial with exactly that config
    runs in tiny@sft100pct (quality there: 0.62 by the rule below, KL 1) and ends Table 1.
    RQ4 on DPO at 100% then finds it and runs nothing in that namespace."""

    def quality(name, config):
        if config["method"] == "dpo":
            if name == "tiny":
                return 0.5 + config["beta"] * config["lr"] * 1000, 0.01, 1.0
            return 0.62, 0.02, 1.0
        return rq1_quality(name, config)

    runner = FakeRunner(quality, reference_quality=lambda name: 0.35)
    s = study(tmp_path, runner)
    rq1.run(s, methods=("orpo",))
    out = tmp_path / "results/tiny/study/rq1"
    assert [r["method"] for r in read_csv(out / "table1.csv")] == ["SFT", "ORPO", "ORPO", "ORPO†"]
    rq3.run(s, methods=("dpo",))
    runner.runs.clear()
    rq1.run(s, methods=("orpo",))
    assert [(name, [(c["method"], c["beta"], c["lr"]) for c in configs])
            for name, _, configs in runner.runs] == [("tiny@sft100pct", [("dpo", 0.5, 1e-4)])]  # fmt: skip
    last = read_csv(out / "table1.csv")[-1]
    assert (last["init"], last["method"], float(last["quality"])) == ("SFT", "DPO", 0.62)
    assert (last["beta"], last["lr"], last["finished"], last["total"]) == (
        "0.5",
        "0.0001",
        "1",
        "1",
    )
    assert (
        "| SFT | DPO | two stage, RQ3's best β and lr | **0.620 [0.600, 0.640]**"
        in (out / "rq1.md").read_text()
    )
    runner.runs.clear()
    rq4.run(s, methods=("dpo",), inits=[sft_namespace(1.0)])
    assert runner.runs == []


# -- RQ4 ------------------------------------------------------------------------------------

FRACTION = {"tiny@base": 0.0, "tiny@sft10pct": 0.1, "tiny@sft100pct": 1.0}


def rq4_quality(name, config):
    """Main namespace (RQ3): quality 0.5 + β·lr·1000 for DPO (best β 0.5, lr 1e-4: 0.55),
    0.5 - β·lr·1000 for NCA (best β 0.1, lr 1e-5: 0.499); initializations: 0.1 + 0.5·fraction
    (+0.1 for DPO)."""
    product = config["beta"] * config["lr"] * 1000
    if name == "tiny":
        return (0.5 + product if config["method"] == "dpo" else 0.5 - product), 0.01, 1.0
    bonus = 0.1 if config["method"] == "dpo" else 0.0
    return 0.1 + 0.5 * FRACTION[name] + bonus, 0.02, 2.0


def test_rq4_needs_rq3_then_aligns_every_init_with_the_best_config(spaces, tmp_path):
    """RQ3 bests: DPO β 0.5 lr 1e-4, NCA β 0.1 lr 1e-5. Per init, one trial per method with
    exactly that config: DPO 0.2 (base), 0.25 (10%), 0.7 (100%); NCA 0.1, 0.15, 0.6. SFT
    only: 0.05 + 0.3·fraction: 0.05, 0.08, 0.35."""
    runner = FakeRunner(rq4_quality, reference_quality=lambda name: 0.05 + 0.3 * FRACTION[name])
    s = study(tmp_path, runner)
    inits = rq4.initializations((0.1, 1.0))
    with pytest.raises(StudyError, match=r"dpo: 4 of 4 .*--methods dpo,nca"):
        rq4.run(s, methods=("dpo", "nca"), inits=inits)
    rq3.run(s, methods=("dpo",))
    with pytest.raises(StudyError, match=r"nca: 4 of 4 configurations have no row"):
        rq4.run(s, methods=("dpo", "nca"), inits=inits)
    rq3.run(s, methods=("nca",))
    runner.runs.clear()
    rq4.run(s, methods=("dpo", "nca"), inits=inits)
    assert [name for name, _, _ in runner.runs] == ["tiny@base", "tiny@sft10pct", "tiny@sft100pct"]
    for _, _, configs in runner.runs:
        assert sorted((c["method"], c["beta"], c["lr"]) for c in configs) == [
            ("dpo", 0.5, 1e-4), ("nca", 0.1, 1e-5)]  # fmt: skip
    # SFT trained for 10% only: 100% is the scenario's own checkpoint
    assert runner.trained == [
        ("tiny", "sft", 1.0), ("tiny@base", "base", None), ("tiny@sft10pct", "sft", 0.1)]  # fmt: skip
    out = tmp_path / "results/tiny/study/rq4"
    got = {(r["method"], r["init"]): round(float(r["quality"]), 6)
           for r in read_csv(out / "sft_fraction.csv")}  # fmt: skip
    assert got == {("dpo", "base"): 0.2, ("dpo", "10%"): 0.25, ("dpo", "100%"): 0.7,
                   ("nca", "base"): 0.1, ("nca", "10%"): 0.15, ("nca", "100%"): 0.6,
                   ("sft only", "base"): 0.05, ("sft only", "10%"): 0.08,
                   ("sft only", "100%"): 0.35}  # fmt: skip
    for kind in ("pairwise", "pointwise"):
        assert (out / f"quality_vs_sft_fraction_{kind}.png").stat().st_size > 1000
        assert "ticktext" in (out / f"quality_vs_sft_fraction_{kind}.html").read_text()
    best = {r["method"]: (r["beta"], r["lr"]) for r in read_csv(out / "best_configs.csv")}
    assert best == {"dpo": ("0.5", "0.0001"), "nca": ("0.1", "1e-05")}


# -- the command line -----------------------------------------------------------------------


def test_cli_dry_run_prints_the_plan_and_starts_nothing(spaces, tmp_path, capsys):
    """rq2 on ORPO: β = 1 x 2 lrs, then 3 other β x 2 lrs: 8 trials and one SFT."""
    assert study_main(["rq2", "--methods", "orpo", "--dry-run", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[rq2 1/2] rq2/beta1: 2 configs in tiny" in out
    assert "[rq2 2/2] rq2/beta-sweep: 6 configs" in out
    assert "dry run: 8 trials to run; references to prepare: 1" in out
    assert not (tmp_path / "tiny").exists()


def test_cli_rejects_methods_outside_the_question(spaces, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        study_main(["rq1", "--methods", "dpo", "--dry-run", "--results", str(tmp_path)])
    assert exit_.value.code == 2
    assert "rq1 runs orpo, asft; got 'dpo'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        study_main(["rq2", "--fractions", "0.1", "--dry-run"])


def test_rq3_verdicts_name_the_winner_first_with_its_lead():
    """B (nca) better than A (dpo) by 0.05: the line reads nca − dpo = +0.050 [+0.020,
    +0.080]; a blur pair is counted with its MDE; the overall kinds test (NaN budget) gets
    its own line."""
    from raydaa.report.analysis import PairedAnalysis
    from raydaa.report.comparisons import Comparison
    from raydaa.report.paired import PairedResult

    def result(diff, low, high, mde):
        return PairedResult(difference=diff, low=low, high=high, p_value=0.001, n=200, sd=0.3,
                            se=0.02, mde=mde, a_mean=0.6, b_mean=0.6 - diff)  # fmt: skip

    pairs = [
        Comparison("best", "dpo", "nca", result=result(-0.05, -0.08, -0.02, 0.04),
                   p_holm=0.002, verdict="B better"),
        Comparison("best", "dpo", "ipo", result=result(0.01, -0.02, 0.04, 0.045),
                   p_holm=0.6, verdict="indistinguishable"),
    ]  # fmt: skip
    kinds = [Comparison("pairwise vs pointwise", "pairwise", "pointwise",
                        result=result(0.0, -0.01, 0.01, 0.02), p_holm=1.0,
                        verdict="indistinguishable")]  # fmt: skip
    paired = PairedAnalysis(pairs=pairs, matched=[], kinds=kinds, budgets=[], spread=[],
                            collapsed=[], with_records=3, finished=3)  # fmt: skip
    text = "\n".join(rq3.verdicts(paired))
    assert "Of the 2 pairs of best configurations, 1 differ" in text
    assert "(their MDE: 0.045-0.045)" in text
    assert "**nca better than dpo**: nca − dpo = +0.050 [+0.020, +0.080], Holm p 0.002" in text
    assert "pooled best against pooled best: indistinguishable (pairwise − pointwise" in text

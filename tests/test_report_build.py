"""`raydaa report` end to end on a hand-made results store (written with write_row).

The store (scenario `tiny`):

    trial  method  β      lr    status     quality  KL    notes
    d1     dpo     0.01   1e-6  finished   0.70     3.0   best DPO
    d2     dpo     0.01   5e-7  finished   0.60     1.0
    d3     dpo     0.1    1e-6  finished   0.65     1.5
    d4     dpo     0.1    5e-7  finished   0.55     0.5
    d5     dpo     0.5    1e-6  finished   0.50     2.0
    d6     dpo     0.5    5e-7  diverged   —        —
    n1     nca     0.001  1e-6  finished   0.62     0.8
    n2     nca     0.001  5e-7  finished   0.62     0.4   ties n1's quality, lower KL: best
    n3     nca     0.01   1e-6  finished   0.58     0.3
    n4     nca     0.01   5e-7  failed     —        —
    s1     simpo   1.0    6e-7  finished   0.66     0.9   γ/β 0.5
    o1     orpo    1.0    1e-6  finished   0.40     0.2   single stage: sft_weight 1, λ 0.5

Best lr per β: dpo {0.01: d1, 0.1: d3, 0.5: d5}; nca {0.001: n2, 0.01: n3}.
DPO's front: d1 (highest quality), d3 (lower KL than d1); d5 (0.50, 2.0) is dominated by d3.
Pooled pairwise front over d1, d3, d5, s1: s1 (0.66, 0.9) dominates d3 (0.65, 1.5) -> {d1, s1}.
DPO ρ(β, KL) over (0.01, 3.0), (0.1, 1.5), (0.5, 2.0): ranks β [1, 2, 3], KL [3, 1, 2],
d = [-2, 1, 1], ρ = 1 - 6·6 / (3·8) = -0.5.
"""

import csv
import math
import re
import threading
from pathlib import Path

import pytest
from s3_server import s3_server

from raydaa.cli.report import main
from raydaa.io import storage
from raydaa.io.results_store import write_row
from raydaa.io.storage import write_bytes
from raydaa.report.build import build_report

NAN = math.nan
FIGURES = ("pareto_methods", "pareto_kinds", "beta_sensitivity")
TABLES = ("summary", "best_configs", "fronts", "correlations", "failures", "pruned",
          "comparisons", "matched_kl", "collapsed")  # fmt: skip

ROWS = [
    # trial, method, beta, lr, status, quality, kl
    ("d1", "dpo", 0.01, 1e-6, "finished", 0.70, 3.0),
    ("d2", "dpo", 0.01, 5e-7, "finished", 0.60, 1.0),
    ("d3", "dpo", 0.1, 1e-6, "finished", 0.65, 1.5),
    ("d4", "dpo", 0.1, 5e-7, "finished", 0.55, 0.5),
    ("d5", "dpo", 0.5, 1e-6, "finished", 0.50, 2.0),
    ("d6", "dpo", 0.5, 5e-7, "diverged", NAN, NAN),
    ("n1", "nca", 0.001, 1e-6, "finished", 0.62, 0.8),
    ("n2", "nca", 0.001, 5e-7, "finished", 0.62, 0.4),
    ("n3", "nca", 0.01, 1e-6, "finished", 0.58, 0.3),
    ("n4", "nca", 0.01, 5e-7, "failed", NAN, NAN),
    ("s1", "simpo", 1.0, 6e-7, "finished", 0.66, 0.9),
    ("o1", "orpo", 1.0, 1e-6, "finished", 0.40, 0.2),
]


def store_row(trial, method, beta, lr, status, quality, kl):
    row = {
        "trial_id": trial, "scenario": "tiny", "method": method, "beta": beta, "lr": lr,
        "lambda_": 1.0, "sft_weight": 0.0, "gamma_beta_ratio": 0.5, "epochs": 1,
        "normalization": "paper", "seed": 0, "status": status, "quality": quality,
        "quality_low": quality - 0.04, "quality_high": quality + 0.04,
        "kl": kl, "kl_low": kl * 0.8, "kl_high": kl * 1.2,
    }  # fmt: skip
    if status == "diverged":
        row |= {"error": "loss is nan at step 3", "diverged_step": 3}
    if status == "failed":
        row["error"] = "evaluation: RuntimeError: judge crashed"
    if trial == "o1":
        row |= {"sft_weight": 1.0, "lambda_": 0.5}
    return row


@pytest.fixture
def results(tmp_path):
    for spec in ROWS:
        write_row(tmp_path, "tiny", store_row(*spec))
    return tmp_path


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def md_table(markdown, heading):
    """The body rows (lists of cells) of the first table after `heading`."""
    lines = markdown.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[start + 2 : end]]


def test_report_files_tables_and_fronts(results):
    written = build_report(results, "tiny")
    out = results / "tiny" / "report"
    expected = {"report.md", "plotly.min.js"} | {f"{t}.csv" for t in TABLES}
    expected |= {f"{f}.{ext}" for f in FIGURES for ext in ("png", "html")}
    assert {Path(p).name for p in written} == expected
    assert {p.name for p in out.iterdir()} == expected  # no temporary file left behind
    assert (
        Path(written[-1]).name == "report.md"
    )  # written last: its links point at files that exist

    # best per method = the highest quality among finished rows, computed here
    best = {}
    for trial, method, beta, lr, status, quality, kl in ROWS:
        name = "orpo+sft" if trial == "o1" else method
        if status == "finished" and (
            name not in best or (-quality, kl) < (-best[name][2], best[name][3])
        ):
            best[name] = (beta, lr, quality, kl, trial)
    assert best["nca"][4] == "n2"  # the tie with n1 went to the lower KL

    markdown = (out / "report.md").read_text()
    table7 = md_table(markdown, "## Best configuration per method")
    assert [r[0] for r in table7] == ["dpo", "simpo", "orpo+sft", "nca"]  # pairwise first
    for method, beta_cell, lr_cell, lam, gamma, quality_cell, _, trial in table7:
        beta, lr, quality, _, best_trial = best[method]
        assert (beta_cell, lr_cell, trial) == (f"{beta:g}", f"{lr:g}", best_trial)
        assert quality_cell.startswith(f"{quality:.3f} [")
        assert lam == ("0.5" if method == "orpo+sft" else "—")
        assert gamma == ("0.5" if method == "simpo" else "—")

    csv_best = {r["method"]: r for r in read_csv(out / "best_configs.csv")}
    for method, (beta, lr, quality, kl, trial) in best.items():
        r = csv_best[method]
        assert (float(r["beta"]), float(r["lr"]), float(r["quality"]), float(r["kl"]), r["trial_id"]) == (
            beta, lr, quality, kl, trial,
        )  # fmt: skip

    summary = {r["method"]: r for r in read_csv(out / "summary.csv")}
    counts = {
        m: tuple(int(summary[m][k]) for k in ("finished", "failed", "diverged", "total"))
        for m in summary
    }
    assert counts == {
        "dpo": (5, 0, 1, 6),
        "simpo": (1, 0, 0, 1),
        "orpo+sft": (1, 0, 0, 1),
        "nca": (3, 1, 0, 4),
    }
    table2 = {r[0]: r for r in md_table(markdown, "## Best quality per method")}
    assert table2["dpo"][2].startswith("**0.700")  # best overall: bold
    assert table2["simpo"][2].startswith("<u>0.660")  # second: underlined

    fronts = read_csv(out / "fronts.csv")
    points = {(r["method"], r["trial_id"]) for r in fronts}
    assert points == {("dpo", "d1"), ("dpo", "d3"), ("dpo", "d5"), ("nca", "n2"), ("nca", "n3"),
                      ("simpo", "s1"), ("orpo+sft", "o1")}  # fmt: skip
    method_front = {r["trial_id"] for r in fronts if r["on_method_front"] == "True"}
    assert method_front == {"d1", "d3", "n2", "n3", "s1", "o1"}
    kind_front = {r["trial_id"] for r in fronts if r["on_kind_front"] == "True"}
    assert kind_front == {"d1", "s1", "n2", "n3"}  # o1 is single-stage: not pooled

    failures = {r["trial_id"]: r for r in read_csv(out / "failures.csv")}
    assert set(failures) == {"d6", "n4"}
    assert failures["n4"]["error"] == "evaluation: RuntimeError: judge crashed"
    assert failures["d6"]["status"] == "diverged" and failures["d6"]["diverged_step"] == "3"
    assert "judge crashed" in markdown and "loss is nan at step 3" in markdown

    rho = {(r["method"], r["lr"]): r for r in read_csv(out / "correlations.csv")}
    assert float(rho["dpo", "best per beta"]["spearman_rho"]) == pytest.approx(-0.5)
    assert rho["dpo", "5e-07"]["spearman_rho"] == ""  # d6 diverged: 2 points, no ρ
    assert "dpo: ρ = -0.50 over 3 β values: KL rises as β falls" in markdown

    for figure in FIGURES:
        assert (out / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        html = (out / f"{figure}.html").read_text()
        assert '<script charset="utf-8" src="plotly.min.js">' in html and "Plotly.newPlot" in html
        assert f"({figure}.png)" in markdown and f"({figure}.html)" in markdown
    assert "s1" in (out / "pareto_kinds.html").read_text()  # hover text names the trial
    assert (out / "plotly.min.js").stat().st_size > 1_000_000


def test_inline_plotly_pages_stand_alone(results, tmp_path):
    build_report(results, "tiny", tmp_path / "inline", plotly_js="inline")
    html = (tmp_path / "inline" / "pareto_methods.html").read_text()
    assert 'src="plotly.min.js"' not in html and len(html) > 1_000_000
    assert not (tmp_path / "inline" / "plotly.min.js").exists()


def test_cli_writes_the_report_and_names_missing_paths(results, tmp_path, capsys):
    assert main(["--results", str(results), "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "report.md").exists()
    assert main(["--results", str(results), "--scenario", "nope"]) == 1
    err = capsys.readouterr().err
    assert str(results / "nope") in err and "['tiny']" in err  # names the path and what exists
    (tmp_path / "empty" / "tiny" / "store").mkdir(parents=True)
    assert main(["--results", str(tmp_path / "empty")]) == 1
    assert f"{tmp_path / 'empty' / 'tiny' / 'store'} holds no rows" in capsys.readouterr().err


def test_unknown_method_names_the_row_file(tmp_path):
    write_row(
        tmp_path,
        "tiny",
        store_row("x1", "dpo", 0.1, 1e-6, "finished", 0.5, 1.0) | {"method": "kto"},
    )
    with pytest.raises(Exception, match=r"kto/x1\.parquet: unknown method 'kto'"):
        build_report(tmp_path, "tiny")


def test_failed_atomic_write_leaves_no_temporary_file(tmp_path):
    (tmp_path / "taken.csv").mkdir()  # a directory where the file should go: the rename fails
    with pytest.raises(OSError):
        write_bytes(tmp_path / "taken.csv", "a,b\n")
    assert [p.name for p in tmp_path.iterdir()] == ["taken.csv"]


def test_concurrent_rebuilds_never_expose_a_partial_file(results):
    """Two writers rebuild the same report while a reader checks every file it opens is
    whole: CSVs with all their rows, PNGs ending in their IEND chunk, report.md with its
    last section."""
    out = results / "tiny" / "report"
    build_report(results, "tiny")
    done, bad, reads = threading.Event(), [], [0]

    def reader():
        while not done.is_set():
            summary = (out / "summary.csv").read_text()
            if len(summary.splitlines()) != 5:
                bad.append(("summary.csv", summary))
            png = (out / "pareto_methods.png").read_bytes()
            if not png.endswith(b"IEND\xaeB`\x82"):
                bad.append(("pareto_methods.png", len(png)))
            markdown = (out / "report.md").read_text()
            if "## Failed and diverged trials" not in markdown or not markdown.endswith("\n"):
                bad.append(("report.md", len(markdown)))
            reads[0] += 1

    def writer():
        for _ in range(2):
            build_report(results, "tiny")

    threads = [threading.Thread(target=writer) for _ in range(2)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert bad == [] and reads[0] > 0
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert re.search(r"^\| dpo \| pairwise \| \*\*0\.700", (out / "report.md").read_text(), re.M)


def test_report_from_and_to_an_object_store(monkeypatch):
    """Results in s3:// (a real S3 server, moto): the report lands beside the store."""
    with s3_server() as env:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        for spec in ROWS:
            write_row("s3://raydaa/sweep", "tiny", store_row(*spec))
        written = build_report("s3://raydaa/sweep", "tiny")
        assert written[-1] == "s3://raydaa/sweep/tiny/report/report.md"
        listed = storage.list_files("s3://raydaa/sweep/tiny/report")
        assert sorted(listed) == sorted(written)
        summary = storage.read_text("s3://raydaa/sweep/tiny/report/summary.csv")
        assert summary.splitlines()[1].startswith("dpo,pairwise,0.7,")
        assert "s3://raydaa/sweep/tiny/store" in storage.read_text(written[-1])

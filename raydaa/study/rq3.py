"""RQ3 (paper §4.2, §5.3, Table 2, Figure 3): what separates the eight DAAs?

Every method's two-stage grid (raydaa/search_spaces/methods/<method>.yaml, β x lr from the SFT
model) in the scenario's own namespace, the store `raydaa search` writes: a method swept
before (by `raydaa search`, or RQ2 for ORPO/ASFT) is not run again.

The report package then draws it from exactly these rows (raydaa.report.build.write_report):
Table 2 (summary.csv), Table 7 (best_configs.csv), the per-method and the pooled pairwise
vs pointwise Pareto fronts (Figure 3), the β-sensitivity plot. rq3.md adds the joint front:
all two-stage methods' best-lr-per-β points pooled into one front, and how many of its
points each kind holds (the paper: pairwise methods dominate it on the 8B model).
"""

from __future__ import annotations

from raydaa.core.methods import METHODS
from raydaa.report import tables
from raydaa.report.analysis import Analysis, analyse
from raydaa.report.pareto import pareto_mask
from raydaa.report.select import KINDS, Row, best_row
from raydaa.study.runner import DONE, MAIN, StudyError, Sweep, same_config


def grid(study, method: str) -> list[dict]:
    """The method's RQ3 configurations (RQ1's DPO row and RQ4 use their best)."""
    return study.space(method).grid()


def best_configs(study, methods, needed_by: str) -> dict[str, Row]:
    """method -> its best row of RQ3's grid in the scenario's store; a StudyError naming
    the methods whose RQ3 sweep is incomplete or has no finished trial. `needed_by` opens
    the error: who uses the configurations (e.g. "RQ4 aligns every SFT model with")."""
    rows = study.rows(MAIN)
    best, problems, rerun = {}, [], []
    for method in methods:
        configs = grid(study, method)
        ready = [r for r in rows if r["status"] in DONE]
        left = [c for c in configs if not any(same_config(r, c) for r in ready)]
        mine = [r for r in rows if any(same_config(r, c) for c in configs)]
        best[method] = best_row(mine)
        if left:
            problems.append(f"{method}: {len(left)} of {len(configs)} configurations have no row")
            rerun.append(method)
        elif best[method] is None:
            problems.append(f"{method}: none of its {len(mine)} trials finished with a quality")
            rerun.append(method)
    if problems:
        smoke = " --smoke" if study.smoke else ""
        raise StudyError(
            f"{needed_by} RQ3's best configuration, and RQ3 is not done in "
            f"{study.store(MAIN)}: {'; '.join(problems)}. Run `raydaa study rq3 --scenario "
            f"{study.scenario.name} --results {study.results} --methods {','.join(rerun)}"
            f"{smoke}` first (a method with only failed trials: `--retry-failed`)."
        )
    return best


def plan(study, methods=METHODS) -> list[Sweep]:
    return [Sweep(f"rq3/{m}", MAIN, {m: grid(study, m)}) for m in methods]


def joint_front(analysis: Analysis) -> dict[str, tuple[int, int]]:
    """kind -> (points on the joint front, points): the two-stage variants' best-lr-per-β
    points of both kinds pooled into one quality-vs-KL front."""
    pooled = [
        (v.kind, p) for v in analysis.variants if not v.name.endswith("+sft") for p in v.points
    ]
    mask = pareto_mask(
        [p["quality"] for _, p in pooled],
        [float("nan") if p.get("kl") is None else p["kl"] for _, p in pooled],
    )
    return {
        kind: (
            sum(bool(on) for (k, _), on in zip(pooled, mask, strict=True) if k == kind),
            sum(k == kind for k, _ in pooled),
        )
        for kind in KINDS
    }


def run(study, methods=METHODS) -> list[str]:
    from raydaa.report.build import write_report

    done = study.execute("rq3", plan(study, methods))
    if study.dry_run:
        return []
    rows = [r for m in methods for r in done[f"rq3/{m}"][m]]
    name = study.scenario.name
    if not rows:
        raise StudyError(f"RQ3 has no rows for {list(methods)} in {study.store(MAIN)}")
    sink = study.output("rq3")
    written = write_report(rows, name, f"{study.store(MAIN)} (RQ3's grids)", sink.out)
    analysis = analyse(rows)
    front = joint_front(analysis)
    page = [
        f"# RQ3: what separates the DAAs? (paper Table 2, Figure 3), scenario `{name}`",
        "",
        f"The two-stage grids of {', '.join(methods)} ({len(rows)} trials). The full report "
        "of these rows: [report.md](report.md) (pooled fronts: "
        "[pareto_kinds.png](pareto_kinds.png), per method: "
        "[pareto_methods.png](pareto_methods.png)).",
        "",
        "## Best quality per method (paper Table 2 form)",
        "",
        tables.summary_markdown(analysis),
        "## Joint Pareto front",
        "",
        "Every method's best-lr-per-β points in one quality-vs-KL front: points each kind "
        "holds on it.",
        "",
        tables.markdown(
            ["kind", "points on the joint front", "points"],
            [[kind, str(on), str(n)] for kind, (on, n) in front.items()],
        ),
        "![pareto_kinds](pareto_kinds.png)",
    ]
    written.append(sink.write("rq3.md", "\n".join(page) + "\n"))
    return written

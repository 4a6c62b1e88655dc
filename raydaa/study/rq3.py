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

import math

from raydaa.core.methods import METHODS
from raydaa.report import tables
from raydaa.report.analysis import Analysis, PairedAnalysis, analyse
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


def _difference(c, flip: bool = False) -> str:
    """A − B with its interval and Holm p; `flip`: B − A (the winner first)."""
    r, sign = c.result, -1.0 if flip else 1.0
    low, high = sorted((sign * r.low, sign * r.high))
    return f"{sign * r.difference:+.3f} [{low:+.3f}, {high:+.3f}], Holm p {c.p_holm:.3g}"


def verdicts(paired: PairedAnalysis) -> list[str]:
    """rq3.md's answer to "is the difference real?": which best-configuration pairs differ,
    which are a blur, and the pooled pairwise-vs-pointwise test, from the paired analysis."""
    made = [c for c in paired.pairs if c.result is not None]
    if not made:
        why = paired.pairs[0].reason if paired.pairs else "fewer than two methods"
        return [f"No paired comparison could be made ({why}).", ""]
    real = [c for c in made if c.verdict in ("A better", "B better")]
    blur = [c for c in made if c not in real]
    lines = [
        f"Of the {len(made)} pair{'s' * (len(made) != 1)} of best configurations, "
        f"{len(real)} differ at 5% after "
        f"Holm's correction and {len(blur)} are indistinguishable on these "
        f"{made[0].result.n} prompts"
        + (f" (their MDE: {min(c.result.mde for c in blur):.3f}-"
           f"{max(c.result.mde for c in blur):.3f})." if blur else "."),
        "",
    ]  # fmt: skip
    for c in real:
        winner, loser = (c.a, c.b) if c.verdict == "A better" else (c.b, c.a)
        lines.append(f"- **{winner} better than {loser}**: {winner} − {loser} = "
                     f"{_difference(c, flip=winner != c.a)}.")  # fmt: skip
    made_kinds = [c for c in paired.kinds if c.result is not None]
    # the overall test has no budget (NaN); the others are at matched KL
    overall = next((c for c in made_kinds if math.isnan(c.budget)), None)
    if overall is not None:
        said = {"A better": f"{overall.a} better", "B better": f"{overall.b} better"}
        lines += ["", f"Pairwise vs pointwise, pooled best against pooled best: "
                  f"{said.get(overall.verdict, overall.verdict)} ({overall.a} − {overall.b} = "
                  f"{_difference(overall)})."]  # fmt: skip
    at_budgets = [c for c in made_kinds if not math.isnan(c.budget)]
    if at_budgets:
        lines.append("At matched KL: " + "; ".join(
            f"KL ≤ {c.budget:.3g}: {c.verdict} ({c.result.difference:+.3f})"
            for c in at_budgets) + ".")  # fmt: skip
    if paired.collapsed:
        lines.append("Collapsed configurations (one model across several β): " + "; ".join(
            f"{g.variant} β {min(g.betas):g}-{max(g.betas):g} at lr "
            f"{', '.join(f'{lr:g}' for lr in g.lrs)}" for g in paired.collapsed) + ".")  # fmt: skip
    return lines + [""]


def run(study, methods=METHODS) -> list[str]:
    from raydaa.report.analysis import analyse_paired
    from raydaa.report.build import stored_records, write_report

    done = study.execute("rq3", plan(study, methods))
    if study.dry_run:
        return []
    rows = [r for m in methods for r in done[f"rq3/{m}"][m]]
    name = study.scenario.name
    if not rows:
        raise StudyError(f"RQ3 has no rows for {list(methods)} in {study.store(MAIN)}")
    sink = study.output("rq3")
    paired = analyse_paired(rows, stored_records(study.results, name))
    written = write_report(
        rows, name, f"{study.store(MAIN)} (RQ3's grids)", sink.out, paired=paired
    )
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
        "",
        "## Is the difference real?",
        "",
        "Paired over the same prompts (and seeds, where replicated): the full tables are in "
        "[report.md](report.md#is-the-difference-real-paired-comparisons).",
        "",
        *verdicts(paired),
    ]
    written.append(sink.write("rq3.md", "\n".join(page) + "\n"))
    return written

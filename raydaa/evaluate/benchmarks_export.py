"""AlpacaEval 2 and Arena-Hard: a policy's answers in each tool's input format, and the
AlpacaEval run when the tool and a judge key are there.

Prompts come from local copies of the benchmarks' files (judge.benchmark_prompts):
  alpaca_eval  a JSON list (or JSONL) of rows with "instruction" (and "dataset"), e.g.
               AlpacaEval's alpaca_eval.json; written back as model_outputs.json, a JSON
               list of {"instruction", "output", "generator", "dataset"}.
  arena_hard   its question.jsonl; v0.1 rows {"question_id", "turns": [{"content"}]} give
               v0.1 answers {"question_id", "answer_id", "model_id", "choices": [{"index",
               "turns": [{"content", "token_len"}]}], "tstamp"}; v2.0 rows {"uid", "prompt"}
               give v2.0 answers {"uid", "ans_id", "model", "messages": [user, assistant
               {"answer"}], "tstamp", "metadata": {"token_len", markdown counts}}.
token_len counts the policy's tokenizer (Arena-Hard counts tiktoken's; its
utils/add_markdown_info.py recomputes the metadata if you need theirs exactly).
Benchmarks in generation.greedy_benchmarks are decoded at temperature 0 (paper A.3).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from raydaa.evaluate.kl import Estimate
from raydaa.evaluate.llm_judge import scrub

DEFAULT_ALPACA_EVAL_ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"  # AlpacaEval 2's default


@dataclass(frozen=True)
class BenchmarkPrompt:
    id: str
    text: str
    row: dict


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: benchmark prompts file not found")
    text = path.read_text(encoding="utf-8")
    try:
        rows = json.loads(text)
        rows = rows if isinstance(rows, list) else [rows]
    except json.JSONDecodeError:  # JSON lines
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{n}: not valid JSON: {err}") from None
    if not rows:
        raise ValueError(f"{path}: no prompts")
    return rows


def load_benchmark_prompts(benchmark: str, path: str | Path) -> list[BenchmarkPrompt]:
    """The benchmark's prompts, in file order; a row without its key is an error naming it."""
    path = Path(path).expanduser()
    prompts = []
    for n, row in enumerate(_read_rows(path)):
        where = f"{path}: row {n}"
        if benchmark == "alpaca_eval":
            if not isinstance(row, dict) or not isinstance(row.get("instruction"), str):
                raise ValueError(f"{where}: expected a string 'instruction' (AlpacaEval format)")
            prompts.append(BenchmarkPrompt(str(n), row["instruction"], row))
        elif benchmark == "arena_hard":
            if isinstance(row, dict) and "uid" in row and isinstance(row.get("prompt"), str):
                prompts.append(BenchmarkPrompt(str(row["uid"]), row["prompt"], row))  # v2.0
            elif isinstance(row, dict) and "question_id" in row and row.get("turns"):
                prompts.append(
                    BenchmarkPrompt(str(row["question_id"]), row["turns"][0]["content"], row)
                )
            else:
                raise ValueError(
                    f"{where}: expected Arena-Hard questions: 'uid' and 'prompt' (v2.0) or "
                    "'question_id' and 'turns' (v0.1)"
                )
        else:
            raise ValueError(
                f"unknown benchmark {benchmark!r}; valid: ['alpaca_eval', 'arena_hard']"
            )
    return prompts


def alpaca_eval_records(
    prompts: list[BenchmarkPrompt], outputs: list[str], generator: str
) -> list[dict]:
    return [
        {
            "instruction": p.text,
            "output": out,
            "generator": generator,
            "dataset": p.row.get("dataset", "alpaca_eval"),
        }
        for p, out in zip(prompts, outputs, strict=True)
    ]


def markdown_counts(text: str) -> dict[str, dict[str, int]]:
    """Headers, lists and bold spans outside code blocks: Arena-Hard's style-control features."""
    text = re.sub(r"```[^`]*```", "", text)
    count = lambda pattern, flags=0: len(re.findall(pattern, text, flags))  # noqa: E731
    return {
        "header_count": {f"h{k}": count(rf"^#{{{k}}}\s", re.MULTILINE) for k in range(1, 7)},
        "list_count": {
            "ordered": count(r"^\s*\d+\.\s", re.MULTILINE),
            "unordered": count(r"^\s*[-*+]\s", re.MULTILINE),
        },
        "bold_count": {"**": count(r"\*\*[^*\n]+\*\*"), "__": count(r"__[^_\n]+__")},
    }


def arena_hard_records(
    prompts: list[BenchmarkPrompt], outputs: list[str], token_lens: list[int], model: str
) -> list[dict]:
    records, now = [], time.time()
    for p, out, n in zip(prompts, outputs, token_lens, strict=True):
        if "uid" in p.row:  # v2.0
            records.append(
                {
                    "uid": p.id,
                    "ans_id": uuid.uuid4().hex,
                    "model": model,
                    "messages": [
                        {"role": "user", "content": p.text},
                        {"role": "assistant", "content": {"answer": out}},
                    ],
                    "tstamp": now,
                    "metadata": {"token_len": n} | markdown_counts(out),
                }
            )
        else:  # v0.1
            records.append(
                {
                    "question_id": p.id,
                    "answer_id": uuid.uuid4().hex,
                    "model_id": model,
                    "choices": [{"index": 0, "turns": [{"content": out, "token_len": n}]}],
                    "tstamp": now,
                }
            )
    return records


def write_export(benchmark: str, records: list[dict], out_dir: str | Path, generator: str) -> Path:
    """alpaca_eval: <out>/alpaca_eval/model_outputs.json; arena_hard:
    <out>/arena_hard/model_answer/<generator>.jsonl (the layout each tool reads)."""
    out_dir = Path(out_dir)
    if benchmark == "alpaca_eval":
        path = out_dir / "alpaca_eval" / "model_outputs.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(records, indent=2, ensure_ascii=False), encoding="utf-8")
    else:
        path = out_dir / "arena_hard" / "model_answer" / f"{generator}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = (json.dumps(r, ensure_ascii=False) for r in records)
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def read_alpaca_eval_leaderboard(path: str | Path, generator: str) -> Estimate:
    """The generator's length-controlled win rate (a fraction) and its 95% interval, from
    the leaderboard.csv `alpaca_eval evaluate` writes (percentages, index column = name)."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        rows = {row[""]: row for row in csv.DictReader(f)}
    if generator not in rows:
        raise ValueError(f"{path}: no row for generator {generator!r}; rows: {sorted(rows)[:10]}")
    row = rows[generator]
    if not row.get("length_controlled_winrate"):
        raise ValueError(f"{path}: no 'length_controlled_winrate' column (not an AlpacaEval 2 run)")
    lc = float(row["length_controlled_winrate"])
    se = float(row["lc_standard_error"]) if row.get("lc_standard_error") else math.nan
    return Estimate(lc / 100, (lc - 1.96 * se) / 100, (lc + 1.96 * se) / 100)


@dataclass
class BenchmarkOutcome:
    benchmark: str
    path: Path
    estimate: Estimate | None  # None: exported, not scored here
    note: str


def run_alpaca_eval(outputs: Path, generator: str, judge) -> BenchmarkOutcome:
    """`alpaca_eval evaluate` on the export when the CLI is installed and the judge's key is
    set; otherwise the outcome says how to run it."""
    # judge.model names the annotator only when AlpacaEval is the scenario's judge
    annotator = (judge.type == "alpaca_eval" and judge.model) or DEFAULT_ALPACA_EVAL_ANNOTATOR
    command = [
        "alpaca_eval",
        "evaluate",
        "--model_outputs",
        str(outputs),
        "--annotators_config",
        annotator,
        "--output_path",
        str(outputs.parent),
    ]
    how = f"to score them: pip install alpaca_eval, export OPENAI_API_KEY, then {' '.join(command)}"
    executable = shutil.which("alpaca_eval")
    key_env = judge.api_key_env or "OPENAI_API_KEY"
    if executable is None:
        return BenchmarkOutcome(
            "alpaca_eval",
            outputs,
            None,
            f"AlpacaEval outputs written to {outputs}; alpaca_eval is not installed; {how}",
        )
    if not os.environ.get(key_env):
        return BenchmarkOutcome(
            "alpaca_eval",
            outputs,
            None,
            f"AlpacaEval outputs written to {outputs}; {key_env} is not set; {how}",
        )
    env = dict(os.environ, OPENAI_API_KEY=os.environ[key_env])
    base_url = judge.endpoint or (
        os.environ.get(judge.endpoint_env) if judge.endpoint_env else None
    )
    if base_url:
        env["OPENAI_API_BASE"] = base_url  # alpaca_eval's OpenAI decoder reads this one
    done = subprocess.run([executable, *command[1:]], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        stderr = scrub(done.stderr[-2000:], os.environ[key_env])  # it may echo a wrong key
        raise RuntimeError(f"alpaca_eval failed (exit {done.returncode}): {stderr}")
    leaderboard = outputs.parent / annotator / "leaderboard.csv"
    estimate = read_alpaca_eval_leaderboard(leaderboard, generator)
    return BenchmarkOutcome(
        "alpaca_eval",
        outputs,
        estimate,
        f"AlpacaEval 2 LC win rate {estimate.mean:.4f} ({leaderboard})",
    )


def arena_hard_note(path: Path, generator: str) -> str:
    return (
        f"Arena-Hard answers written to {path}; to score them: copy the file into "
        "arena-hard-auto's data/<bench_name>/model_answer/, add "
        f"{generator!r} to its judge config's model_list, then run its gen_judgment.py and "
        "show_result.py"
    )


def export_benchmarks(
    policy,
    tokenizer,
    scenario,
    benchmarks: list[str],
    out_dir: str | Path,
    generator: str,
    max_prompts: int | None = None,
) -> list[BenchmarkOutcome]:
    """Generate the policy's answers to each benchmark's prompts, write them, and score
    AlpacaEval where possible."""
    from raydaa.data.preflight import scenario_format
    from raydaa.evaluate.generation import render_prompts, sample

    outcomes = []
    for benchmark in benchmarks:
        prompts = load_benchmark_prompts(
            benchmark, benchmark_prompts_path(scenario.judge, benchmark)
        )
        prompts = prompts[:max_prompts] if max_prompts else prompts
        config = scenario.generation
        if benchmark in scenario.generation.greedy_benchmarks:
            config = replace(config, temperature=0.0)
        ids = render_prompts(
            [p.text for p in prompts], tokenizer, scenario_format(scenario) == "conversational"
        )
        samples = sample(policy, tokenizer, ids, config, seed=scenario.seed)
        if benchmark == "alpaca_eval":
            records = alpaca_eval_records(prompts, samples.texts, generator)
            path = write_export(benchmark, records, out_dir, generator)
            outcomes.append(run_alpaca_eval(path, generator, scenario.judge))
        else:
            eos = tokenizer.eos_token_id
            lens = [len(c) - (c[-1:] == [eos]) for c in samples.completion_ids]  # answer tokens
            records = arena_hard_records(prompts, samples.texts, lens, generator)
            path = write_export(benchmark, records, out_dir, generator)
            outcomes.append(
                BenchmarkOutcome(benchmark, path, None, arena_hard_note(path, generator))
            )
    return outcomes


def benchmark_prompts_path(judge, benchmark: str) -> Path:
    """The local prompts file of a benchmark; a missing setting or file names the key."""
    value = judge.benchmark_prompts.get(benchmark)
    if not value:
        raise ValueError(
            f"judge.benchmark_prompts.{benchmark} is not set: give the local path of the "
            f"benchmark's prompts ({'alpaca_eval.json' if benchmark == 'alpaca_eval' else 'question.jsonl'})"
        )
    path = Path(os.path.expandvars(value)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"judge.benchmark_prompts.{benchmark}: {path} does not exist")
    return path


def benchmark_metrics(outcomes: list[BenchmarkOutcome], primary: str | None) -> dict[str, Any]:
    """quality/quality_low/quality_high from the primary benchmark's score (NaN when not
    scored here), `<benchmark>_export` paths, and `<benchmark>_quality` for scored extras."""
    nan = math.nan
    metrics: dict[str, Any] = {}
    for o in outcomes:
        metrics[f"{o.benchmark}_export"] = str(o.path)
        est = o.estimate or Estimate(nan, nan, nan)
        if o.benchmark == primary:
            metrics |= {"quality": est.mean, "quality_low": est.low, "quality_high": est.high}
        elif o.estimate is not None:
            metrics[f"{o.benchmark}_quality"] = est.mean
    return metrics


def export_checkpoint(
    scenario_name: str,
    policy_path: str,
    benchmark: str,
    out_dir: str | Path,
    *,
    prompts: str | None = None,
    name: str | None = None,
    max_prompts: int | None = None,
) -> list[BenchmarkOutcome]:
    """`raydaa benchmark`: a checkpoint's answers to one benchmark with the scenario's
    generation settings and judge config (`export_benchmarks`). `prompts` replaces
    judge.benchmark_prompts[benchmark]; `name` the generator name (default:
    <scenario>-<checkpoint>)."""
    import torch

    from raydaa.config.scenario import load_scenario
    from raydaa.data.tokenize import load_tokenizer
    from raydaa.io.models import pretrained_model

    scenario = load_scenario(scenario_name)
    if prompts:
        scenario.judge.benchmark_prompts = {
            **scenario.judge.benchmark_prompts,
            benchmark: prompts,
        }
    tokenizer = load_tokenizer(scenario)
    policy = pretrained_model(policy_path, dtype=torch.float32).eval()
    name = name or generator_name(scenario, policy_path)
    return export_benchmarks(policy, tokenizer, scenario, [benchmark], out_dir, name, max_prompts)


def generator_name(scenario, policy_path: str) -> str:
    """<scenario>-<run>: the nearest folder of the checkpoint that names the run."""
    parts = [
        p for p in Path(policy_path).resolve().parts if p != "hf" and not p.startswith("checkpoint")
    ]
    return f"{scenario.name}-{parts[-1]}"

"""How a scenario's trials are evaluated: the sampling of answers (paper Table 8) and the
judge (paper §4.2, A.3)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from raydaa.config.judge_prompts import (
    SideBySideTemplate,
    get_template,
    is_template_file,
    resolve_template_path,
)
from raydaa.config.rules import check_finite, check_whole

BENCHMARKS = ("alpaca_eval", "arena_hard")
"""Public benchmarks a UF scenario is judged on; each brings its own prompts and baseline."""
PAIRWISE_JUDGES = ("gold", "gpt_side_by_side", "reward_model")
"""Judges that compare the policy's answer with a baseline answer, prompt by prompt."""
JUDGES = (*PAIRWISE_JUDGES, *BENCHMARKS)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""The shape of an environment variable's name (POSIX)."""


@dataclass
class SamplingConfig:
    """How answers are sampled (paper Table 8): the fields `raydaa.evaluate.generation.sample`
    reads. Not frozen, since GenerationConfig (a scenario section, which scripts and tests
    set in place) extends it; `dataclasses.replace` gives a changed copy."""

    temperature: float = 0.9
    """Sampling temperature (paper Table 8); 0 is greedy."""
    top_k: int = 40
    """Keep the k most likely tokens (paper Table 8); 0 disables."""
    top_p: float = 1.0
    """Nucleus sampling mass (paper Table 8); 1.0 disables."""
    max_new_tokens: int = 256
    """Tokens generated per answer (paper Table 8: 256 TL;DR, 4096 UF)."""

    def __post_init__(self) -> None:
        numbers = {"temperature": self.temperature, "top_p": self.top_p}
        self.temperature, self.top_p = check_finite(numbers).values()
        check_whole({"top_k": self.top_k, "max_new_tokens": self.max_new_tokens})
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class GenerationConfig(SamplingConfig):
    """Sampling of each trial's answers, for the KL estimate and the judge (paper Table 8)."""

    num_prompts: int | None = None
    """Validation prompts sampled per trial, where KL(policy || reference) is measured
    (paper A.3: on the validation subset); None: all of them."""
    greedy_benchmarks: list[str] = field(default_factory=list)
    """Benchmarks generated with temperature 0 whatever `temperature` says (paper A.3:
    Arena-Hard, following its original configuration)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_prompts is not None:
            check_whole({"num_prompts": self.num_prompts})
        if self.num_prompts is not None and self.num_prompts < 1:
            raise ValueError(f"num_prompts must be >= 1 or null (all), got {self.num_prompts}")
        unknown = sorted(set(self.greedy_benchmarks) - set(BENCHMARKS))
        if unknown:
            raise ValueError(f"greedy_benchmarks: unknown {unknown}; valid: {list(BENCHMARKS)}")


@dataclass
class IntermediateEvalConfig:
    """Evaluation of a trial's current policy while it trains, on a small fixed prompt
    subset and the final evaluation's yardstick (same sampling, judge, baseline answers
    and KL estimator against the reference). Its metrics reach Ray Tune as intermediate
    results, which `raydaa search --scheduler asha|hyperband` stops weak trials on."""

    eval_every: int | None = None
    """Optimizer steps between two intermediate evaluations (at steps eval_every,
    2 x eval_every, ..., never at the run's last step, which the final evaluation
    measures); null: none (the default)."""
    eval_subset_prompts: int = 32
    """Prompts of one intermediate evaluation: the first N evaluation prompts (validation
    prompts for KL, and the judge's prompts), the same for every trial and every step.
    32 keeps one evaluation to seconds on tiny; its quality interval is about ±0.15."""

    def __post_init__(self) -> None:
        if self.eval_every is not None:
            check_whole({"eval_every": self.eval_every})
            if self.eval_every < 1:
                raise ValueError(
                    f"eval_every must be >= 1 (optimizer steps) or null (off), got {self.eval_every}"
                )
        check_whole({"eval_subset_prompts": self.eval_subset_prompts})
        if self.eval_subset_prompts < 1:
            raise ValueError(f"eval_subset_prompts must be >= 1, got {self.eval_subset_prompts}")


@dataclass
class JudgeConfig:
    """How a trial's quality is measured (paper §4.2, A.3)."""

    type: str
    """gold: tiny's programmatic judge; gpt_side_by_side: an LLM behind an OpenAI-compatible
    endpoint compares the policy's answer with a baseline answer (`prompt_template`);
    reward_model: a local sequence-classification reward model scores both answers;
    alpaca_eval / arena_hard: the public benchmark (UF; AlpacaEval 2 LC win rate is the
    paper's primary UF metric), its prompts from `benchmark_prompts`."""
    num_prompts: int | None = None
    """Prompts judged, for judges on the scenario's own prompts (paper: 500 golden TL;DR
    prompts); None: all. Benchmarks bring their own prompts, so null there."""
    baseline: str = "chosen"
    """What the policy's answer is compared with: sft_policy (the scenario's reference
    policy's own samples on the same prompts), chosen (the validation pair's chosen
    answer), reference (the reference completion of `prompts`, TL;DR's golden summaries),
    benchmark (the benchmark's own baseline model)."""
    prompts: str | None = None
    """Source of the judged prompts when they are not the scenario's validation pairs
    (TL;DR: `trl-lib/tldr`, whose validation split holds the golden summaries)."""
    prompts_split: str = "validation"
    """Split of `prompts`."""
    model: str | None = None
    """The judge model: gpt_side_by_side: the model name the endpoint serves
    (gpt-4o-2024-08-06, paper §4.2); reward_model: the checkpoint's path (local, s3:// or
    gs://) or a built-in one by name (`rehearsal:reward_model`); alpaca_eval:
    the annotators config (null: AlpacaEval 2's default); null for gold."""
    endpoint: str | None = None
    """The judge API's base URL, written here (e.g. http://localhost:8000/v1, a vLLM
    server); exclusive with endpoint_env."""
    endpoint_env: str | None = None
    """Environment variable holding the judge API's base URL (read at evaluation time)."""
    api_key_env: str | None = None
    """The NAME of the environment variable holding the judge API's key. The key itself is
    in no YAML, config, repr, log, row or Ray task argument: the process that sends the
    judge's requests reads it from its own environment at request time, so it must be set
    on every node that evaluates (docs/evaluation.md). null: a server that needs no key."""
    prompt_template: str | None = None
    """The side-by-side prompt: tldr_side_by_side (paper Appendix I), chat_side_by_side
    (general chat, MT-Bench's pairwise judge in spirit), or a YAML file of one's own with
    keys `system` and `user` (user with {text}, {answer_a}, {answer_b}); a relative path
    is taken from the scenario YAML's folder (from the current directory for a JudgeConfig
    built in code)."""
    extra_benchmarks: list[str] = field(default_factory=list)
    """Further benchmarks reported next to `type` (UF: arena_hard beside alpaca_eval)."""
    benchmark_prompts: dict[str, str] = field(default_factory=dict)
    """Benchmark -> local file of its prompts (AlpacaEval's alpaca_eval.json, Arena-Hard's
    question.jsonl): nothing is downloaded at evaluation time."""
    cache: str | None = None
    """SQLite file caching the LLM judge's answers; null: $RAYDAA_JUDGE_CACHE, else
    ~/.cache/raydaa/judgments.sqlite."""
    concurrency: int = 8
    """Requests in flight to the LLM judge's endpoint."""
    template: SideBySideTemplate | None = field(
        default=None, init=False, repr=False, compare=False
    )
    """The prompt `prompt_template` names, read once at load: a file's text travels with
    the scenario, so an evaluation on another node needs no copy of the file."""

    def __post_init__(self) -> None:
        if self.type not in JUDGES:
            raise ValueError(f"judge.type: unknown {self.type!r}; valid: {list(JUDGES)}")
        if self.num_prompts is not None and self.num_prompts < 1:
            raise ValueError(f"num_prompts must be >= 1 or null (all), got {self.num_prompts}")
        if self.baseline not in ("sft_policy", "chosen", "reference", "benchmark"):
            raise ValueError(
                f"baseline must be sft_policy, chosen, reference or benchmark, got {self.baseline!r}"
            )
        unknown = sorted(set(self.extra_benchmarks) - set(BENCHMARKS))
        if unknown:
            raise ValueError(f"extra_benchmarks: unknown {unknown}; valid: {list(BENCHMARKS)}")
        if self.type in self.extra_benchmarks:
            raise ValueError(f"extra_benchmarks repeats the judge type {self.type!r}")
        if self.type in BENCHMARKS:
            if self.num_prompts is not None or self.prompts is not None:
                raise ValueError(
                    f"{self.type} brings its own prompts: num_prompts and prompts must be null"
                )
            if self.baseline != "benchmark":
                raise ValueError(
                    f"{self.type} compares with its own baseline: baseline must be 'benchmark'"
                )
        elif self.baseline == "benchmark":
            raise ValueError(f"baseline 'benchmark' needs a benchmark judge, not {self.type!r}")
        if self.type == "gpt_side_by_side":
            missing = [k for k in ("model", "prompt_template") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"gpt_side_by_side needs {missing}")
            if (self.endpoint is None) == (self.endpoint_env is None):
                raise ValueError(
                    "gpt_side_by_side needs exactly one of endpoint (the base URL) or "
                    "endpoint_env (the environment variable holding it)"
                )
            if is_template_file(self.prompt_template):  # absolute, so it means one file
                self.prompt_template = str(Path(self.prompt_template).expanduser().absolute())
            self.template = get_template(self.prompt_template)
        elif self.prompt_template is not None:
            raise ValueError(
                f"prompt_template is for gpt_side_by_side, not {self.type!r}: set it null"
            )
        if self.type == "reward_model":
            if self.model is None:
                raise ValueError("reward_model needs model: the reward model checkpoint's path")
            if self.endpoint or self.endpoint_env or self.api_key_env:
                raise ValueError(
                    "reward_model runs locally: endpoint, endpoint_env and api_key_env must be null"
                )
        if self.endpoint is not None and self.endpoint_env is not None:
            raise ValueError("give endpoint or endpoint_env, not both")
        if self.api_key_env is not None and not (
            isinstance(self.api_key_env, str) and ENV_NAME.fullmatch(self.api_key_env)
        ):
            # not echoed: what is written here may be the key itself
            raise ValueError(
                "api_key_env must be the NAME of an environment variable (letters, digits, _), "
                "e.g. OPENAI_API_KEY, never the key itself (the value given is not shown)"
            )
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        judged = {self.type, *self.extra_benchmarks} & set(BENCHMARKS)
        stray = sorted(set(self.benchmark_prompts) - judged)
        if stray:
            raise ValueError(
                f"benchmark_prompts: {stray} not judged here; benchmarks judged: {sorted(judged)}"
            )
        if self.baseline == "reference" and self.prompts is None:
            raise ValueError(
                "baseline 'reference' compares with the reference completions of `prompts`: set prompts"
            )
        if self.type == "gold" and (
            self.model or self.endpoint or self.endpoint_env or self.api_key_env
        ):
            raise ValueError(
                "the gold judge is code: model, endpoint, endpoint_env and api_key_env must be null"
            )
        if self.type == "gold" and self.prompts is not None:
            raise ValueError(
                "the gold judge scores the scenario's validation prompts: prompts must be null"
            )


def resolve_judge_paths(data, folder: Path) -> None:
    """In a scenario's raw YAML mapping: a relative `judge.prompt_template` file is taken from
    the scenario file's folder (what the user sees beside it), not the current directory."""
    judge = data.get("judge") if isinstance(data, dict) else None
    if isinstance(judge, dict) and isinstance(judge.get("prompt_template"), str):
        judge["prompt_template"] = resolve_template_path(judge["prompt_template"], folder)

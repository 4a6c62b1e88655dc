"""Pairwise LLM judge over any OpenAI-compatible chat-completions endpoint (OpenAI, or a
vLLM / SGLang server), with the paper's side-by-side prompt (Appendix I).

Each pair is judged twice, the candidate once as assistant A and once as B, to cancel the
judge's position bias. One verdict, from the candidate's side: 1 win, 0 loss, 0.5 for
"C" (tie). The pair's outcome is the mean of its parseable verdicts:
    win + win = 1,  win + loss = 0.5,  win + tie = 0.75,  tie + tie = 0.5, ...
An answer with no `Winner: A|B|C` line is unparseable: it is left out of that mean and
counted in `stats["judge_unparseable"]`; a pair with both verdicts unparseable is a tie.

Transient failures (HTTP 408/409/429/5xx, timeouts, refused connections) are retried
with exponential backoff; answers are cached in SQLite (judge_cache.py), so judging the
same pairs again sends no request.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from raydaa.config.judge_prompts import get_template
from raydaa.evaluate.judge_cache import JudgmentCache, default_cache_path, judgment_key

# The verdict line; tolerates markdown bold/quotes and "Assistant A". The last one counts
# (the explanation may quote the format before the verdict).
VERDICT = re.compile(r"winner\s*:\s*[*\"'\[(\s]*(?:assistant\s+)?([ABC])\b", re.IGNORECASE)
MAX_TOKENS = 1024  # explanation + verdict; the paper's prompt asks for a few sentences
KEY_FOR_KEYLESS_SERVERS = "EMPTY"  # vLLM/SGLang started without --api-key accept any key


class JudgeSetupError(ValueError):
    """The judge cannot be reached as configured (missing URL or key)."""


class JudgeRequestError(RuntimeError):
    """The endpoint refused a request, or kept failing after all retries."""


def parse_verdict(answer: str) -> str | None:
    """The verdict, A, B or C, from the judge's answer; None when it has no verdict line."""
    found = VERDICT.findall(answer or "")
    return found[-1].upper() if found else None


def candidate_outcome(verdict: str | None, candidate_position: str) -> float | None:
    """The verdict from the candidate's side: 1 win, 0 loss, 0.5 tie, None unparseable."""
    if verdict is None:
        return None
    if verdict == "C":
        return 0.5
    return 1.0 if verdict == candidate_position else 0.0


def combine_orders(first: float | None, second: float | None) -> float:
    """Mean of the parseable verdicts of the two orders; a tie when neither parses."""
    parsed = [v for v in (first, second) if v is not None]
    return sum(parsed) / len(parsed) if parsed else 0.5


def prompt_text(prompt) -> str:
    """The text the judge sees: a plain prompt as is, a conversation as role-tagged turns."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1:
        return prompt[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in prompt)


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    api_key: str
    model: str


def resolve_endpoint(config) -> Endpoint:
    """Base URL from judge.endpoint or the variable judge.endpoint_env names; key from the
    variable judge.api_key_env names (none: a keyless local server)."""
    base_url = config.endpoint
    if base_url is None:
        base_url = os.environ.get(config.endpoint_env or "", "")
        if not base_url:
            raise JudgeSetupError(
                f"judge endpoint: environment variable {config.endpoint_env} is not set "
                f"(judge.endpoint_env); set it to an OpenAI-compatible base URL, e.g. "
                f"{config.endpoint_env}=https://api.openai.com/v1 or "
                f"{config.endpoint_env}=http://localhost:8000/v1 for a vLLM/SGLang server"
            )
    api_key = KEY_FOR_KEYLESS_SERVERS
    if config.api_key_env:
        api_key = os.environ.get(config.api_key_env, "")
        if not api_key:
            raise JudgeSetupError(
                f"judge API key: environment variable {config.api_key_env} is not set "
                f"(judge.api_key_env); export it, or set judge.api_key_env: null for a "
                "server that needs no key"
            )
    return Endpoint(base_url=base_url, api_key=api_key, model=config.model)


class LLMJudge:
    """`compare` asks each pair in both orders, `stats` describes the last call."""

    name = "gpt_side_by_side"

    def __init__(
        self,
        endpoint: Endpoint,
        template: str,
        *,
        cache_path: str | Path | None = None,
        concurrency: int = 8,
        max_retries: int = 6,
        retry_base_s: float = 1.0,
        timeout_s: float = 120.0,
    ) -> None:
        from openai import OpenAI

        self.endpoint, self.template_name = endpoint, template
        self.template = get_template(template)
        self.cache = JudgmentCache(cache_path or default_cache_path())
        self.concurrency, self.max_retries = concurrency, max_retries
        self.retry_base_s = retry_base_s
        # retries are ours (below), so that every transient failure is counted and logged alike
        self.client = OpenAI(
            base_url=endpoint.base_url, api_key=endpoint.api_key, timeout=timeout_s, max_retries=0
        )
        self.settings = {"temperature": 0.0, "max_tokens": MAX_TOKENS}
        self.stats: dict[str, int] = {}

    @classmethod
    def from_config(cls, config) -> LLMJudge:
        return cls(
            resolve_endpoint(config),
            config.prompt_template,
            cache_path=config.cache,
            concurrency=config.concurrency,
        )

    def compare(
        self, prompts: Sequence, candidates: Sequence[str], baselines: Sequence[str]
    ) -> list[float]:
        # (pair index, candidate position, messages) for both orders of every pair
        asks = []
        for i, (p, c, b) in enumerate(zip(prompts, candidates, baselines, strict=True)):
            text = prompt_text(p)
            asks.append((i, "A", self.template.messages(text, c, b)))
            asks.append((i, "B", self.template.messages(text, b, c)))
        keys = [
            judgment_key(self.endpoint.model, self.template_name, m, self.settings)
            for _, _, m in asks
        ]
        answers = self.cache.get_many(keys)
        hits = sum(k in answers for k in keys)
        todo = {k: m for k, (_, _, m) in zip(keys, asks, strict=True) if k not in answers}
        answers |= self._ask_all(todo)

        verdicts: list[list[float | None]] = [[] for _ in prompts]
        unparseable = 0
        for (i, position, _), key in zip(asks, keys, strict=True):
            outcome = candidate_outcome(parse_verdict(answers[key]), position)
            unparseable += outcome is None
            verdicts[i].append(outcome)
        self.stats = {
            "judge_verdicts": len(asks),
            "judge_unparseable": unparseable,
            "judge_requests": len(todo),
            "judge_cache_hits": hits,
        }
        return [combine_orders(*pair) for pair in verdicts]

    def _ask_all(self, todo: dict[str, list[dict]]) -> dict[str, str]:
        """Ask the uncached prompts concurrently; each answer is cached as it arrives, so an
        interrupted evaluation pays only for what is left."""
        done: dict[str, str] = {}
        if not todo:
            return done
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        futures = {pool.submit(self._ask, messages): key for key, messages in todo.items()}
        error: BaseException | None = None
        for future in as_completed(futures):
            try:
                answer = future.result()
            except BaseException as err:  # the first error stops what has not started
                if error is None:
                    error = err
                    for pending in futures:
                        pending.cancel()
                continue
            done[futures[future]] = answer
            self.cache.put(futures[future], self.endpoint.model, self.template_name, answer)
        pool.shutdown(wait=True)
        if error is not None:
            raise error
        return done

    def _ask(self, messages: list[dict]) -> str:
        import openai

        for attempt in range(self.max_retries + 1):
            try:
                response = self.client.chat.completions.create(
                    model=self.endpoint.model, messages=messages, **self.settings
                )
                return response.choices[0].message.content or ""
            except (openai.APIConnectionError, openai.APIStatusError) as err:  # timeouts too
                status = getattr(err, "status_code", None)
                transient = status is None or status in (408, 409, 429) or status >= 500
                where = f"judge endpoint {self.endpoint.base_url} (model {self.endpoint.model})"
                if not transient:
                    raise JudgeRequestError(
                        f"{where} refused the request: HTTP {status}: {err}"
                    ) from err
                if attempt == self.max_retries:
                    raise JudgeRequestError(
                        f"{where} still failing after {attempt + 1} attempts: {err}"
                    ) from err
                # exponential backoff with jitter, capped at a minute
                time.sleep(min(60.0, self.retry_base_s * 2**attempt) * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")

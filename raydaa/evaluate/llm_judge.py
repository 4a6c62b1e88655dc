"""Pairwise LLM judge over any OpenAI-compatible chat-completions endpoint (OpenAI, or a
vLLM / SGLang server), with a side-by-side prompt (raydaa/config/judge_prompts.py: the
paper's TL;DR prompt of Appendix I, a general chat one, or a file of the user's own).

Each pair is judged twice, the candidate once as assistant A and once as B, to cancel the
judge's position bias. One verdict, from the candidate's side: 1 win, 0 loss, 0.5 for
"C" (tie). The pair's outcome is the mean of its parseable verdicts:
    win + win = 1,  win + loss = 0.5,  win + tie = 0.75,  tie + tie = 0.5, ...
An answer with no `Winner: A|B|C` line is unparseable: it is left out of that mean and
counted in `stats["judge_unparseable"]`; a pair with both verdicts unparseable is a tie.

Transient failures (HTTP 408/409/429/5xx, timeouts, refused connections) are retried
with exponential backoff (each retry logged); answers are cached in SQLite
(judge_cache.py), so judging the same pairs again sends no request.

The API key: only its environment variable's name travels (in JudgeConfig and Endpoint);
the process that sends the requests reads the key at request time, and every error text
raised from here has it scrubbed out (servers echo a wrong key back).
"""

from __future__ import annotations

import logging
import os
import random
import re
import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from raydaa.config.judge_prompts import SideBySideTemplate, get_template
from raydaa.evaluate.judge_cache import JudgmentCache, default_cache_path, judgment_key

# The verdict line; tolerates markdown bold/quotes and "Assistant A". The last one counts
# (the explanation may quote the format before the verdict).
VERDICT = re.compile(r"winner\s*:\s*[*\"'\[(\s]*(?:assistant\s+)?([ABC])\b", re.IGNORECASE)
MAX_TOKENS = 1024  # explanation + verdict; the paper's prompt asks for a few sentences
KEY_FOR_KEYLESS_SERVERS = "EMPTY"  # vLLM/SGLang started without --api-key accept any key
log = logging.getLogger(__name__)


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
    """Where the judge's requests go. It holds the NAME of the key's environment variable,
    never the key: the process that sends the requests reads the key from its own
    environment at request time (`api_key()`), so no repr, log line, pickle or Ray task
    argument made from an Endpoint can carry it."""

    base_url: str
    model: str
    api_key_env: str | None = None
    """Environment variable holding the key; None: a keyless server (vLLM/SGLang started
    without --api-key)."""

    def api_key(self) -> str:
        """The key, read now from this process's environment."""
        if self.api_key_env is None:
            return KEY_FOR_KEYLESS_SERVERS
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise JudgeSetupError(
                f"judge API key: environment variable {self.api_key_env} is not set "
                f"(judge.api_key_env) on {socket.gethostname()}; export it where "
                "raydaa runs and on every Ray node before `ray start` (docs/evaluation.md), "
                "or set judge.api_key_env: null for a server that needs no key"
            )
        return key


def resolve_endpoint(config) -> Endpoint:
    """Base URL from judge.endpoint or the variable judge.endpoint_env names; the key's
    variable from judge.api_key_env (none: a keyless local server), checked to be set here
    so that a missing key stops the evaluation before any sampling."""
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
    endpoint = Endpoint(base_url=base_url, model=config.model, api_key_env=config.api_key_env)
    endpoint.api_key()  # raises when unset; the key itself is not kept
    return endpoint


REDACTED = "<redacted: judge API key>"


def scrub(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` replaced (servers echo a wrong key back:
    "Incorrect API key provided: sk-...")."""
    return text.replace(secret, REDACTED) if secret else text


class LLMJudge:
    """`compare` asks each pair in both orders, `stats` describes the last call."""

    name = "gpt_side_by_side"

    def __init__(
        self,
        endpoint: Endpoint,
        template: str | SideBySideTemplate,
        *,
        template_name: str | None = None,
        cache_path: str | Path | None = None,
        concurrency: int = 8,
        max_retries: int = 6,
        retry_base_s: float = 1.0,
        timeout_s: float = 120.0,
    ) -> None:
        """`template`: a built-in name or a template file's path, or the template itself
        (then `template_name`, part of the cache key, names it)."""
        from openai import OpenAI

        if isinstance(template, str):
            template_name, template = template, get_template(template)
        self.endpoint, self.template = endpoint, template
        self.template_name = template_name or "custom"
        self.cache = JudgmentCache(cache_path or default_cache_path())
        self.concurrency, self.max_retries = concurrency, max_retries
        self.retry_base_s = retry_base_s
        # retries are ours (below), so that every transient failure is counted and logged
        # alike; the key is a callable the client calls before each request (openai >= 1.107),
        # so it is read from this process's environment when the request is sent
        self.client = OpenAI(
            base_url=endpoint.base_url, api_key=endpoint.api_key, timeout=timeout_s, max_retries=0
        )
        self.settings = {"temperature": 0.0, "max_tokens": MAX_TOKENS}
        self.stats: dict[str, int] = {}
        # where the verdicts come from, in the evaluating process's log (no key in it)
        print(f"judge: {endpoint!r}, template {self.template_name}", flush=True)

    @classmethod
    def from_config(cls, config) -> LLMJudge:
        """The judge a JudgeConfig describes (its template already read at load)."""
        return cls(
            resolve_endpoint(config),
            config.template or config.prompt_template,
            template_name=config.prompt_template,
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
            raise self._clean(error)
        return done

    def _where(self) -> str:
        return f"judge endpoint {self.endpoint.base_url} (model {self.endpoint.model})"

    def _scrub(self, text: str) -> str:
        """`text` without the key, read again (it is in no attribute of ours)."""
        try:
            return scrub(text, self.endpoint.api_key())
        except JudgeSetupError:  # unset now: nothing of it to find
            return text

    def _clean(self, error: BaseException) -> BaseException:
        """The error to raise: ours as they are (written clean, with no cause attached); any
        other a JudgeRequestError with its text scrubbed and no chained exception, since a
        traceback prints the causes (and the openai error's text may echo the key)."""
        if isinstance(error, JudgeSetupError | JudgeRequestError) or not isinstance(
            error, Exception
        ):
            return error
        text = self._scrub(f"{type(error).__name__}: {error}")
        return JudgeRequestError(f"{self._where()} failed: {text}")

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
                reason = self._scrub(str(err))
            # out of the except block, so the errors below chain no openai error
            transient = status is None or status in (408, 409, 429) or status >= 500
            if not transient:
                raise JudgeRequestError(
                    f"{self._where()} refused the request: HTTP {status}: {reason}"
                )
            if attempt == self.max_retries:
                raise JudgeRequestError(
                    f"{self._where()} still failing after {attempt + 1} attempts: {reason}"
                )
            # exponential backoff with jitter, capped at a minute
            wait = min(60.0, self.retry_base_s * 2**attempt) * random.uniform(0.5, 1.0)
            log.warning(
                "%s: %s (attempt %d of %d), retrying in %.1f s",
                self._where(),
                reason,
                attempt + 1,
                self.max_retries + 1,
                wait,
            )
            time.sleep(wait)
        raise AssertionError("unreachable")

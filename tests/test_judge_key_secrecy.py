"""The LLM judge's API key in a real sweep: it reaches the judge and nothing else.

`raydaa search` on the shrunken tiny scenario (one DPO trial from the base model, 12
prompts) with the pairwise LLM judge pointed at tests/judge_server.py, the key's variable
set to a random planted value. The server's first answer is a 429 whose message repeats
the key (as OpenAI's 401 does), so the key also passes through raydaa's error handling and
retry log. Then every file of the results dir, the Tune storage dir, the judge's cache, the
run's Ray session (a fresh temp dir, so its logs are known) and the command's own output is
searched for the key: zero hits, while the server did receive it with each request.
"""

import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import shrunken_search_spaces
from judge_server import JudgeServer

from raydaa.evaluate.llm_judge import REDACTED
from raydaa.io.results_store import read_store

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.deepspeed]

KEY_ENV = "RAYDAA_TEST_JUDGE_KEY"
PROMPTS = 12


def files_holding(root: Path, needle: bytes) -> list[str]:
    """Every file under `root` whose bytes contain `needle` (binary files too: Parquet,
    SQLite, pickles, checkpoints)."""
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    hits.append(str(path))
            except OSError:  # a socket or a file Ray removed meanwhile
                continue
    return hits


def test_a_planted_key_reaches_the_judge_and_nothing_else(tmp_path):
    key = f"sk-planted-{secrets.token_hex(16)}"
    # short: Ray's socket paths under it must stay within the OS's 107-byte limit
    ray_tmp = Path(tempfile.mkdtemp(prefix="rk", dir="/tmp"))
    results, tune_dir, cache = tmp_path / "results", tmp_path / "tune", tmp_path / "judge.sqlite"
    try:
        with JudgeServer(fail_first=(429,)) as server:
            judge = {
                "type": "gpt_side_by_side",
                "model": "judge-model",
                "prompt_template": "chat_side_by_side",
                "endpoint": server.url,
                "api_key_env": KEY_ENV,
                "baseline": "sft_policy",
                "cache": str(cache),
                "concurrency": 2,
            }
            spaces = shrunken_search_spaces(
                tmp_path / "spaces", "dpo", {"betas": [0.1], "lrs": [1e-4]},
                prompts=PROMPTS, judge=judge,
            )  # fmt: skip
            method_path = spaces / "methods" / "dpo.yaml"
            spec = yaml.safe_load(method_path.read_text())
            spec["init"] = "base"  # the base model is the reference: no SFT stage to wait for
            method_path.write_text(yaml.safe_dump(spec))
            env = dict(
                os.environ, RAYDAA_SEARCH_SPACES=str(spaces), RAY_TMPDIR=str(ray_tmp),
                **{KEY_ENV: key},
            )  # fmt: skip
            cmd = [sys.executable, "-m", "raydaa.cli", "search", "--method", "dpo",
                   "--results", str(results), "--storage", str(tune_dir)]  # fmt: skip
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

        # first the leak: nowhere, the rows included
        rows = read_store(results, "tiny", "dpo").to_pylist()
        needle = key.encode()
        hits = [h for root in (results, tune_dir, ray_tmp) for h in files_holding(root, needle)]
        hits += [h for h in (cache,) if needle in h.read_bytes()]
        hits += [name for name, text in (("stdout", out.stdout), ("stderr", out.stderr))
                 if key in text]  # fmt: skip
        hits += [f"row {k}" for row in rows for k, v in row.items() if key in str(v)]
        assert hits == [], f"the planted key leaked into: {hits}"

        # the judge was asked, with the key: the 429, then each distinct question (both
        # orders of every prompt, one when the two answers are the same text), as the
        # trial's reported metrics count them
        (result_file,) = tune_dir.rglob("result.json")
        result = json.loads(result_file.read_text().splitlines()[-1])
        assert result["judge_verdicts"] == 2 * PROMPTS and result["judge_unparseable"] == 0
        auths = [r["auth"] for r in server.requests]
        assert PROMPTS <= result["judge_requests"] == len(auths) - 1
        assert set(auths) == {f"Bearer {key}"}
        assert len(rows) == 1 and rows[0]["status"] == "finished", rows
        assert 0 <= rows[0]["quality"] <= 1 and not math.isnan(rows[0]["quality"])

        sessions = list((ray_tmp / "ray").glob("session_2*"))
        assert len(sessions) == 1, sessions  # this run's own cluster, its logs below
        logs = sessions[0] / "logs"
        # the evaluating process's log shows the 429's echo, scrubbed: the path ran there
        assert files_holding(logs, f"Incorrect API key provided: {REDACTED}".encode())
        assert files_holding(logs, f"api_key_env='{KEY_ENV}'".encode())  # the judge's line
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

"""SQLite cache of LLM-judge answers, so re-judging the same pair costs no request.

Key: sha256 over the judge model's name, the template name and every message sent (the
template's text with the prompt and both answers, in the order asked) and the sampling
settings. The endpoint URL is not part of it: the same model behind another URL (a
second vLLM replica, a proxy) gives the same judgment. Answers are stored raw, parsed on
read, so a parser fix applies to cached answers too. WAL mode lets concurrent trials on
one node share the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path

DEFAULT_CACHE = "~/.cache/raydaa/judgments.sqlite"


def default_cache_path() -> Path:
    """`$RAYDAA_JUDGE_CACHE`, else ~/.cache/raydaa/judgments.sqlite."""
    return Path(os.environ.get("RAYDAA_JUDGE_CACHE", DEFAULT_CACHE)).expanduser()


def judgment_key(model: str, template: str, messages: list[dict], settings: dict) -> str:
    payload = json.dumps(
        {"model": model, "template": template, "messages": messages, "settings": settings},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class JudgmentCache:
    """key -> raw answer text. Use from one thread (the judge writes from its main thread)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS judgments (key TEXT PRIMARY KEY, model TEXT, "
            "template TEXT, answer TEXT, created REAL)"
        )
        self._db.commit()

    def get_many(self, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):  # SQLite's bound-parameter limit
            chunk = unique[start : start + 500]
            rows = self._db.execute(
                f"SELECT key, answer FROM judgments WHERE key IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            found.update(rows.fetchall())
        return found

    def put(self, key: str, model: str, template: str, answer: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO judgments VALUES (?, ?, ?, ?, ?)",
            (key, model, template, answer, time.time()),
        )
        self._db.commit()

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM judgments").fetchone()[0]

    def close(self) -> None:
        self._db.close()

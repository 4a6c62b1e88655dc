"""A scenario YAML with a comment on every value, written line by line from data.

PyYAML's dump drops comments, and ruamel.yaml is not a dependency, so this small emitter
formats the lines itself: each value is dumped by PyYAML in flow style (so quoting and
float forms are PyYAML's own and read back identically), each mapping becomes an indented
block, and the comment of a key's path goes at the end of its line.
"""

from __future__ import annotations

from typing import Any

import yaml

Path_ = tuple[str, ...]
"""A key's path from the top of the file: ("sft", "lr")."""

COMMENT_COLUMN = 30
"""Inline comments start here (the shipped scenarios' column), or two spaces after a long line."""


def scalar(value: Any) -> str:
    """`value` (a number, string, bool, None, list or empty mapping) as one line of YAML."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False)
    text = text.strip()
    return text.removesuffix("...").strip()  # PyYAML ends a lone scalar with a "..." line


def render(values: dict[str, Any], comments: dict[Path_, str], header: list[str]) -> str:
    """The YAML text of `values` (nested mappings become blocks), `header` as the opening
    `#` lines, and `comments[path]` after each key's line (a multi-line comment continues
    on `#` lines under the key). `yaml.safe_load` of the result equals `values`."""
    lines = [f"# {line}".rstrip() for line in header]
    _block(values, (), comments, lines)
    return "\n".join(lines) + "\n"


def _block(values: dict[str, Any], parent: Path_, comments: dict[Path_, str], lines: list[str]) -> None:
    indent = "  " * len(parent)
    for key, value in values.items():
        path = (*parent, key)
        nested = isinstance(value, dict) and value
        line = f"{indent}{scalar(key)}:" + ("" if nested else f" {scalar(value)}")
        first, *more = comments.get(path, "").splitlines() or [""]
        if first:
            line = f"{line:<{COMMENT_COLUMN - 2}}  # {first}"
        lines.append(line)
        lines.extend(f"{indent}  # {text}".rstrip() for text in more)
        if nested:
            _block(value, path, comments, lines)

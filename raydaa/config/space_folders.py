"""Where search-space YAML files come from: the folder shipped inside the package, under
the user's own folders (`$RAYDAA_SEARCH_SPACES`, `--search-spaces DIR`).

A file in a user folder replaces the shipped file of the same relative path
(`scenarios/tiny.yaml`, `methods/dpo.yaml`, ...); any other file adds to them. Several
user folders are separated by os.pathsep; the first one that holds a file wins.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from raydaa.config.loading import ConfigError

ENV = "RAYDAA_SEARCH_SPACES"
"""The environment variable naming the user's folders; Ray workers inherit it."""
KINDS = ("scenarios", "methods", "single_stage")
"""The sub-folders of a search-space folder."""


def shipped_dir() -> Path:
    """The search spaces shipped inside the package (`raydaa/search_spaces/`), found through
    the installed package, so any install run from any directory finds them."""
    return Path(os.fspath(files("raydaa") / "search_spaces"))


def user_dirs() -> list[Path]:
    """The folders of `$RAYDAA_SEARCH_SPACES`, first (winning) one first; a missing folder
    is a ConfigError naming the variable and the folder."""
    folders = [Path(p).expanduser() for p in os.environ.get(ENV, "").split(os.pathsep) if p]
    for folder in folders:
        if not folder.is_dir():
            raise ConfigError(f"${ENV}: {folder} is not a directory")
    return folders


def layers(root: Path | str | None = None) -> list[Path]:
    """The folders searched, winning one first: `root` alone when given (a complete
    search-space folder), else the user's folders, then the shipped one."""
    if root is not None:
        return [Path(root)]
    return [*user_dirs(), shipped_dir()]


def find(kind: str, name: str, root: Path | str | None = None) -> Path | None:
    """`<layer>/<kind>/<name>.yaml` of the first layer that has it, else None."""
    for layer in layers(root):
        path = layer / kind / f"{name}.yaml"
        if path.is_file():
            return path
    return None


def listing(kind: str, root: Path | str | None = None) -> dict[str, Path]:
    """Every `<kind>/*.yaml` over the layers, name -> the winning file, sorted by name."""
    found: dict[str, Path] = {}
    for layer in reversed(layers(root)):
        found.update({p.stem: p for p in (layer / kind).glob("*.yaml")})
    return dict(sorted(found.items()))


def where(kind: str, root: Path | str | None = None) -> str:
    """The `<layer>/<kind>` folders searched, for error messages."""
    return ", ".join(str(layer / kind) for layer in layers(root))


def use_search_spaces(folders: list[str]) -> None:
    """Put `folders` (the `--search-spaces` flag) ahead of `$RAYDAA_SEARCH_SPACES` for this
    process and, through the environment, for the Ray workers it starts."""
    for folder in folders:
        if not Path(folder).expanduser().is_dir():
            raise ConfigError(f"--search-spaces {folder}: not a directory")
    current = [p for p in os.environ.get(ENV, "").split(os.pathsep) if p]
    absolute = [str(Path(f).expanduser().resolve()) for f in folders]
    os.environ[ENV] = os.pathsep.join([*absolute, *current])

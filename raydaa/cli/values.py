"""argparse `type=` functions that check a typed value against its domain, so a bad flag
(`--beta 0`, `--lr nan`, `--max-steps -1`) ends the command with argparse's usage error
(exit 2, the flag named) before any Ray, DeepSpeed or data work starts."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from raydaa.core.methods import LOSS_DOMAINS, check_loss_number


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_float(text: str) -> float:
    """A finite number > 0 (a learning rate)."""
    value = _number(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 (epochs, steps)."""
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (GPUs per node: 0 is a CPU run)."""
    value = _whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def share(text: str) -> float:
    """A share of the data in [0.01, 1] (paper RQ4's SFT fractions)."""
    value = _number(text)
    if not 0.01 <= value <= 1.0:  # also false for NaN
        raise argparse.ArgumentTypeError(f"must be in [0.01, 1], got {text!r}")
    return value


def loss_value(name: str) -> Callable[[str], float]:
    """The type of the numeric LossConfig field `name`: the domain LossConfig itself checks
    (raydaa.core.methods.LOSS_DOMAINS)."""

    def parse(text: str) -> float:
        try:
            return check_loss_number(name, _number(text))
        except ValueError:
            wording = LOSS_DOMAINS[name][0]
            raise argparse.ArgumentTypeError(
                f"must be a finite number {wording}, got {text!r}"
            ) from None

    parse.__name__ = name  # argparse names the type in "invalid <name> value" messages
    return parse

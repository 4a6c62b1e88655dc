"""What a trial's curves hold, free of any tracking library: each training report's
numbers as `train/<key>` (its intermediate evaluation's as `eval/<key>`), the trial's
final evaluation as `final/<key>`, and its configuration as hyperparameters."""

from __future__ import annotations

from typing import Any

from raydaa.sweep.pruning import finite_real

EVAL_PREFIXES = ("quality", "kl", "eval_", "sampling_", "mean_completion")
"""The keys an intermediate evaluation adds to its step's report (quality, quality_low, kl,
kl_k3_high, eval_seconds, sampling_tokens_per_s, ...: raydaa.evaluate.intermediate)."""
NOT_CURVES = frozenset({"step", "diverged_step"})
FINAL_KEYS = ("quality", "quality_low", "quality_high", "kl", "kl_low", "kl_high", "kl_k3",
              "final_loss", "reward_accuracy", "tokens_seen", "device_seconds")
"""The trial's final result keys that become `final/<key>` points."""
FINAL_METRICS = ("final/quality", "final/kl")
"""The ones a hyperparameter table shows beside each configuration."""


def report_step(report: dict[str, Any]) -> int | None:
    """The optimizer step a training report was made at (None: not a step's report)."""
    step = report.get("step")
    return int(step) if finite_real(step) else None


def step_points(report: dict[str, Any]) -> dict[str, float]:
    """One training report -> {tag: value} of its finite numbers."""
    return {f"{'eval' if key.startswith(EVAL_PREFIXES) else 'train'}/{key}": float(value)
            for key, value in report.items() if key not in NOT_CURVES and finite_real(value)}


def final_points(metrics: dict[str, Any]) -> dict[str, float]:
    """The trial's final result -> {`final/<key>`: value} of its finite numbers."""
    return {f"final/{key}": float(metrics[key]) for key in FINAL_KEYS
            if finite_real(metrics.get(key))}


def hyperparameters(config: dict[str, Any]) -> dict[str, Any]:
    """The trial's configuration with every loss field resolved (method, beta, lambda_,
    sft_weight, normalization, lr, epochs, seed...): numbers, text and flags only."""
    from raydaa.config.search_space import AlignConfig

    resolved = {**config, **AlignConfig.from_config(config).as_dict()}
    return {key: value for key, value in resolved.items()
            if isinstance(value, str | bool | int | float) and value == value}

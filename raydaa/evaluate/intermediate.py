"""Intermediate evaluation: a trial's current policy, while it trains, on the first
`intermediate_eval.eval_subset_prompts` evaluation prompts and the final evaluation's
yardstick (raydaa.evaluate.policy: same sampling settings and seed, judge, baseline
answers, and KL estimator against the scenario's reference).

`IntermediateEvaluation` is the training loop's `eval_fn(engine, step)` (contract in
raydaa/train/eval_hook.py): rank 0 evaluates `engine.module` as it is; the other ranks
return at once. On its first call rank 0 builds the yardstick (tokenizer, prompts,
judge, baseline answers: sampled from the reference once per scenario if no earlier
evaluation cached them) and loads the reference policy, which it keeps for the run: one
more copy of the model in the evaluation dtype on rank 0's device (tiny: 7 MB; an 8B
model in bf16: 16 GB of GPU memory beside training's).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch


class IntermediateEvaluation:
    """Picklable (it travels in the Train run's config); the yardstick and the reference
    model are built on the worker, not shipped."""

    def __init__(self, scenario, reference_path: str) -> None:
        self.scenario = scenario
        self.reference_path = reference_path
        self._prepared: tuple[Any, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_prepared": None}

    def __call__(self, engine, step: int) -> dict[str, Any]:
        if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return {}
        return self.evaluate(engine.module)

    def evaluate(self, policy) -> dict[str, Any]:
        """Quality (with its 95% interval), KL (k1, k3) and the prompt count of `policy`
        (a loaded model) on the subset; `eval_seconds` this evaluation took (and
        `eval_cpu_seconds`, this process's CPU time in it: the figure to compare on a
        shared machine), and on the first call `eval_setup_seconds`, building the
        yardstick and loading the reference."""
        from raydaa.evaluate.policy import measure_policy, reference_logps, score

        start = time.perf_counter()
        setup = {}
        if self._prepared is None:
            self._prepared = self._prepare()
            setup = {"eval_setup_seconds": time.perf_counter() - start}
        ev, reference = self._prepared
        begin, cpu = time.perf_counter(), time.process_time()
        side = measure_policy(policy, ev, self.scenario)
        metrics = score(ev, side, reference_logps(reference, side, ev, self.scenario),
                        self.scenario)
        metrics.pop("records")  # per-prompt records belong to the final evaluation
        samples = side.samples
        speed = samples.new_tokens / samples.generate_seconds if samples.generate_seconds else math.nan
        return metrics | {"sampling_tokens_per_s": speed,
                          "eval_seconds": time.perf_counter() - begin,
                          "eval_cpu_seconds": time.process_time() - cpu} | setup

    def _prepare(self):
        from raydaa.evaluate.policy import eval_model, evaluation_set
        from raydaa.io import storage

        reference = storage.local_copy(self.reference_path)  # transformers reads local files
        subset = self.scenario.intermediate_eval.eval_subset_prompts
        return evaluation_set(self.scenario, reference, limit=subset), eval_model(reference,
                                                                                   self.scenario)

    @staticmethod
    def describe(metrics: dict[str, Any]) -> str:
        """`evaluation on 32 prompts: quality 0.531 [0.375, 0.688], KL 0.0421, 2.3 s
        (2.1 s CPU)`."""
        text = (f"evaluation on {metrics['eval_prompts']} prompts: quality "
                f"{metrics['quality']:.3g} [{metrics['quality_low']:.3g}, "
                f"{metrics['quality_high']:.3g}], KL {metrics['kl']:.3g}, "
                f"{metrics['eval_seconds']:.1f} s ({metrics['eval_cpu_seconds']:.1f} s CPU)")
        if "eval_setup_seconds" in metrics:
            text += f" (+{metrics['eval_setup_seconds']:.1f} s loading the reference)"
        return text

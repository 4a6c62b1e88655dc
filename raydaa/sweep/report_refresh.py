"""ReportRefreshCallback: keeps `<results>/<scenario>/report/` current while a sweep runs.

The only Ray-aware file of raydaa.report. List it after ResultsStoreCallback: Tune calls
callbacks in list order, so the trial's row is in the store when the report is rebuilt.
A rebuild (~0.5 s for a few dozen trials) runs in Tune's driver loop, at most once every
`min_interval_s`; a trial that completes inside the interval is picked up by the next
loop step past it, and the experiment's end always rebuilds. A failing rebuild is logged
and never stops the sweep.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ray import tune

logger = logging.getLogger(__name__)


class ReportRefreshCallback(tune.Callback):
    def __init__(
        self,
        results: str | Path,
        scenario_name: str,
        *,
        min_interval_s: float = 30.0,
        out: str | Path | None = None,
        clock=time.monotonic,
    ) -> None:
        self.results, self.scenario_name, self.out = results, scenario_name, out
        self.min_interval_s = min_interval_s
        self.clock = clock
        self.builds = 0
        """Successful rebuilds so far."""
        self.errors = 0
        self._last: float | None = None
        self._pending = False

    def rebuild(self) -> bool:
        """Rebuild now; True on success. Any error is logged, never raised."""
        from raydaa.report.build import build_report
        from raydaa.report.select import ReportError

        self._pending = False
        self._last = self.clock()
        try:
            build_report(self.results, self.scenario_name, self.out)
        except ReportError as err:  # nothing in the store yet: not worth a traceback
            logger.info("report not rebuilt: %s", err)
            return False
        except Exception:
            self.errors += 1
            logger.exception("report rebuild failed (the sweep goes on)")
            return False
        self.builds += 1
        return True

    def _maybe_rebuild(self) -> None:
        if self._pending and (
            self._last is None or self.clock() - self._last >= self.min_interval_s
        ):
            self.rebuild()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._pending = True
        self._maybe_rebuild()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._pending = True
        self._maybe_rebuild()

    def on_step_end(self, iteration, trials, **info):
        self._maybe_rebuild()

    def on_experiment_end(self, trials, **info):
        self.rebuild()

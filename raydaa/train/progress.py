"""Progress lines on the driver while a run works: each phase once as it starts, the step
count every `every_s` seconds, and every note a worker left (e.g. a stale lock cleared).
Read from the run's phase records (raydaa/train/phases.py); prints nothing of its own
when the run is silent, so a hang shows as the last phase printed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from raydaa.train import phases


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class ProgressPrinter:
    def __init__(self, token: str, label: str, *, every_s: float = 15.0,
                 say: Callable[[str], None] | None = None, poll_s: float = 1.0) -> None:
        self.token, self.label, self.every_s, self.poll_s = token, label, every_s, poll_s
        self.say = say or (lambda text: print(text, flush=True))
        self._phases: dict[str, tuple] = {}
        self._notes: dict[str, int] = {}
        self._last_step_line = 0.0
        self._last_step = -1
        self._first: tuple[float, int] | None = None  # (when, step) of the first step seen
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="raydaa-progress")

    def __enter__(self) -> ProgressPrinter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.poll(final=True)  # the last notes and the final step

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - progress must never fail the run
                pass

    def poll(self, final: bool = False) -> None:
        records = {w: r for w, r in phases.read(self.token).items() if "phase" in r}
        changed: dict[tuple, list[str]] = {}
        for who, record in sorted(records.items()):
            for note in record.get("notes", [])[self._notes.get(who, 0):]:
                self.say(f"{self.label}: {who}: {note}")
            self._notes[who] = len(record.get("notes", []))
            state = (record["phase"], record.get("detail", ""))
            if state[0] != phases.TRAINING and self._phases.get(who) != state:
                changed.setdefault(state, []).append(who)
            self._phases[who] = state
        for (phase, detail), whos in changed.items():
            if phase == phases.DONE:
                continue
            self.say(f"{self.label}: {', '.join(whos)} {phase}" + (f": {detail}" if detail else ""))
        lead = records.get("rank0") or next(iter(records.values()), None)
        if lead and lead.get("step"):
            self._step_line(lead, final)

    def _step_line(self, record: dict, final: bool) -> None:
        now, step, total = time.monotonic(), int(record["step"]), int(record.get("total") or 0)
        final = final or (total and step >= total)
        if step == self._last_step or (now - self._last_step_line < self.every_s and not final):
            return
        self._last_step, self._last_step_line = step, now
        elapsed = now - self._start
        parts = [f"step {step}/{total}" + (f" ({100 * step / total:.0f}%)" if total else "")]
        for key, fmt in (("loss", "loss {:.4g}"), ("tokens_per_s", "{:,.0f} tokens/s")):
            if isinstance(record.get(key), int | float):
                parts.append(fmt.format(record[key]))
        parts.append(f"{_duration(elapsed)} elapsed")
        if self._first is None:
            self._first = (now, step)
        elif total and step < total and step > self._first[1]:
            per_step = (now - self._first[0]) / (step - self._first[1])
            parts.append(f"~{_duration(per_step * (total - step))} left")
        self.say(f"{self.label}: " + ", ".join(parts))

"""Bounds on silence: a run that does not reach its first step, or stops stepping, is
stopped and fails with the phase it was stuck in and what it was waiting on.

    RunWatch            the decision, pure: phase records in, a verdict (or None) out
    WatchdogCallback    runs it inside the Ray Train controller, which can abort its own
                        run (Ray's graceful abort: workers killed, placement group freed)
    WatchedTorchConfig  Ray's TorchConfig whose backend starts each worker's beacon
                        before the torch process group, so a rendezvous hang is seen too
    WatchdogTimeout     what the driver raises when the controller stopped a run

Progress is judged on the watcher's own clock (the time it last saw a record change), so
clock skew between nodes cannot fire or mask the watchdog.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from raydaa.train import phases

VERDICT = "verdict"
SILENT_AFTER_S = 10 * phases.BEAT_S
ABORT_GRACE_S = 10.0
"""Seconds a controller has to abort its run gracefully before it is killed."""
"""A process whose record has not been rewritten for this long is blocked or gone."""


class WatchdogTimeout(RuntimeError):
    """A run stopped by its watchdog; the message names the phase and what it waited on."""


@dataclass(frozen=True)
class Limits:
    startup_s: float
    """Seconds from the run's start to its first optimizer step."""
    stall_s: float
    """Seconds without any progress (a step, a phase change) once training has begun."""

    def __post_init__(self) -> None:
        if not (self.startup_s > 0 and self.stall_s > 0):
            raise ValueError(f"watchdog times must be > 0, got {self}")


class RunWatch:
    """Watches the records of `who` (e.g. rank0, rank1) of one run."""

    def __init__(self, limits: Limits, who: Sequence[str], *, started: float) -> None:
        self.limits, self.who, self.started = limits, list(who), started
        self._seen: dict[str, tuple] = {}
        self._changed: dict[str, float] = {}
        self._beat: dict[str, tuple[float, float]] = {}  # who -> (beat_at, when seen)
        self.stepped = False

    def observe(self, records: dict[str, dict[str, Any]], now: float) -> str | None:
        for who in self.who:
            record = records.get(who)
            if record is None:
                continue
            state = (record.get("phase"), record.get("detail"), record.get("step"))
            if self._seen.get(who) != state:
                self._seen[who], self._changed[who] = state, now
            beat = record.get("beat_at")
            if who not in self._beat or self._beat[who][0] != beat:
                self._beat[who] = (beat, now)
            if int(record.get("step") or 0) >= 1:
                self.stepped = True
        if not self.stepped:
            if now - self.started <= self.limits.startup_s:
                return None
            # A phase entered within the last beat has not yet been seen from outside: its
            # `where` is still the line that entered it. One more beat says where it waits.
            if any(now - self._changed.get(w, self.started) < phases.BEAT_S + 1.0
                   for w in self.who):
                return None
            return self._startup_verdict(records, now)
        last = max(self._changed.values(), default=self.started)
        if now - last > self.limits.stall_s:
            step = max(int(r.get("step") or 0) for r in records.values() if "step" in r)
            return (f"no progress for {self.limits.stall_s:g} s after step {step} "
                    f"(stall watchdog): {self._states(records, now)}")
        return None

    def _startup_verdict(self, records: dict[str, dict[str, Any]], now: float) -> str:
        def rank(who: str) -> int:
            phase = records.get(who, {}).get("phase", phases.WORKER_START)
            order = phases.STARTUP_ORDER
            return order.index(phase) if phase in order else len(order)

        laggard = min(self.who, key=rank)
        record = records.get(laggard)
        phase = record.get("phase") if record else phases.WORKER_START
        detail = record.get("detail") if record else ""
        head = (f"no first step within {self.limits.startup_s:g} s (start-up watchdog): "
                f"stuck in {phase}" + (f" ({detail})" if detail else ""))
        return f"{head}; {self._states(records, now)}"

    def _states(self, records: dict[str, dict[str, Any]], now: float) -> str:
        parts = []
        for who in self.who:
            record = records.get(who)
            if record is None:
                parts.append(f"{who}: not started (no process yet: waiting for resources)")
                continue
            text = f"{who}: {record.get('phase')}"
            if record.get("detail"):
                text += f" ({record['detail']})"
            if record.get("step"):
                text += f" at step {record['step']}/{record.get('total')}"
            text += f", in {record.get('where', '?')}"
            seen = self._beat.get(who)
            if seen and now - seen[1] > SILENT_AFTER_S:
                text += (f"; silent for {now - seen[1]:.0f} s (its process is blocked "
                         "holding the interpreter, or gone)")
            parts.append(text)
        return "; ".join(parts)


ABORT = "abort"


def request_abort(token: str) -> None:
    """Ask the run's controller to abort it (the driver's Ctrl-C)."""
    phases.put(token, ABORT, {"at": time.time()})


def verdict_of(token: str) -> str | None:
    record = phases.read(token).get(VERDICT)
    return record.get("message") if record else None


def _ray_callbacks():
    # Ray Train V2's DeveloperAPI callback base (RunConfig accepts any RayTrainCallback).
    from ray.train.v2._internal.execution.callback import ControllerCallback

    return ControllerCallback


class WatchdogCallback(_ray_callbacks()):
    """Runs `RunWatch` in the Train controller every second; on a verdict, records it
    under the run's token and asks the controller to abort (as Ray's own Ctrl-C does)."""

    def __init__(self, token: str, limits: Limits, num_workers: int,
                 resources_per_worker: dict[str, float]) -> None:
        self.token, self.limits = token, limits
        self.who = [f"rank{r}" for r in range(num_workers)]
        self.resources = dict(resources_per_worker)
        self._stop: threading.Event | None = None

    def after_controller_start(self, train_run_context) -> None:
        import ray

        self._stop = threading.Event()
        handle = ray.get_runtime_context().current_actor
        thread = threading.Thread(target=self._watch, args=(handle,), daemon=True,
                                  name="raydaa-watchdog")
        thread.start()

    def _watch(self, controller) -> None:
        import ray

        watch = RunWatch(self.limits, self.who, started=time.monotonic())
        while not self._stop.wait(1.0):
            try:
                records = phases.read(self.token)
                verdict = watch.observe(records, time.monotonic())
            except Exception:  # noqa: BLE001 - the GCS briefly unreachable: look again
                continue
            if ABORT in records:  # the driver was interrupted: no verdict, just stop
                self._abort(controller)
                return
            if verdict is None:
                continue
            if not watch.stepped and not any(w in records for w in self.who):
                free = {k: round(v, 2) for k, v in ray.available_resources().items()
                        if k in ("CPU", "GPU", "memory")}
                verdict += (f"; each of {len(self.who)} workers asks for {self.resources}, "
                            f"the cluster has {free} free")
            phases.put(self.token, VERDICT, {"message": verdict, "at": time.time()})
            self._abort(controller)
            return

    def _abort(self, controller) -> None:
        import ray

        controller.abort.remote()
        # The controller starts a worker group synchronously (up to a minute per try,
        # retried forever while resources are missing) and only then hears the abort;
        # past a grace period it is killed, and Ray reaps what it owned.
        if not self._stop.wait(ABORT_GRACE_S):
            ray.kill(controller, no_restart=True)

    def after_controller_finish(self, result) -> None:
        if self._stop is not None:
            self._stop.set()

    async def before_controller_shutdown(self) -> None:
        if self._stop is not None:
            self._stop.set()


def _start_beacon(token: str, rank: int, world: int) -> None:
    phases.beacon(token, f"rank{rank}").phase(
        phases.PROCESS_GROUP, f"torch process group of {world} workers")


def _torch_backend_classes():
    from ray.train.torch import TorchConfig
    from ray.train.torch.config import _TorchBackend

    return TorchConfig, _TorchBackend


_TorchConfig, _TorchBackend = _torch_backend_classes()


class _WatchedTorchBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config) -> None:
        import ray

        token, world = backend_config.watch_token, len(worker_group)
        if token:
            ray.get([worker_group.execute_single_async(i, _start_beacon, token, i, world)
                     for i in range(world)])
        super().on_start(worker_group, backend_config)


@dataclass
class WatchedTorchConfig(_TorchConfig):
    """TorchConfig whose workers report their phase from before the process group on."""

    watch_token: str = ""

    @property
    def backend_cls(self):
        return _WatchedTorchBackend

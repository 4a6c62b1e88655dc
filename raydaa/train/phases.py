"""Where each process of a run is: phase records on Ray's GCS key-value store.

Every process of a training run (its workers; also a reference-cache task) keeps one
record under the run's token: its phase, what it waits on, its last step, and where its
main thread is. A `Beacon` thread rewrites the record every `BEAT_S` seconds, so a process
stuck inside one call (a lock, a rendezvous, a model download) is still seen, with the
frame it is stuck in. The run's watchdog (raydaa/train/watchdog.py) and the driver's
progress lines read these records. Records are small JSON values in the GCS, which every
process of a Ray cluster reaches without an extra actor.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import traceback
from typing import Any

WORKER_START = "worker start"
PROCESS_GROUP = "process group"
OP_BUILD = "op build"
MODEL_LOAD = "model load"
DEEPSPEED_INIT = "DeepSpeed initialisation"
DATA_LOAD = "data load"
FIRST_STEP = "first step"
TRAINING = "training"
CHECKPOINT = "checkpoint"
EVALUATION = "evaluation"
SCORING = "scoring"
DONE = "done"
STARTUP_ORDER = (WORKER_START, PROCESS_GROUP, OP_BUILD, MODEL_LOAD, DEEPSPEED_INIT, DATA_LOAD,
                 FIRST_STEP)
"""The start-up phases of a training worker, in the order it passes them."""

BEAT_S = 2.0
_NAMESPACE = "raydaa_phases"


def _kv():
    from ray.experimental import internal_kv

    return internal_kv


def _key(token: str, who: str) -> bytes:
    return f"{token}/{who}".encode()


def put(token: str, who: str, record: dict[str, Any]) -> None:
    kv = _kv()
    if kv._internal_kv_initialized():
        kv._internal_kv_put(_key(token, who), json.dumps(record), overwrite=True,
                            namespace=_NAMESPACE)


def read(token: str) -> dict[str, dict[str, Any]]:
    """{who: record} of every process of the run that has reported."""
    kv = _kv()
    if not kv._internal_kv_initialized():
        return {}
    out = {}
    for key in kv._internal_kv_list(f"{token}/".encode(), namespace=_NAMESPACE):
        value = kv._internal_kv_get(key, namespace=_NAMESPACE)
        if value is not None:
            out[key.decode().split("/", 1)[1]] = json.loads(value)
    return out


def clear(token: str) -> None:
    kv = _kv()
    if kv._internal_kv_initialized():
        kv._internal_kv_del(f"{token}/".encode(), del_by_prefix=True, namespace=_NAMESPACE)


def where(thread_id: int | None = None, depth: int = 3) -> str:
    """The innermost frames of a thread (default: the main thread), `file:line function`,
    innermost first, paths shortened to the package: what the thread is waiting in.
    Frames of the standard library's own machinery are kept: a lock wait shows as such."""
    thread_id = thread_id or threading.main_thread().ident
    frame = sys._current_frames().get(thread_id)
    if frame is None:
        return "?"
    frames = traceback.extract_stack(frame)
    # a flush from the worker's own thread (a phase change) would show this module itself
    while len(frames) > 1 and frames[-1].filename == __file__:
        frames.pop()
    frames = frames[-depth:]
    return " < ".join(f"{_short(f.filename)}:{f.lineno} {f.name}" for f in reversed(frames))


def _short(path: str) -> str:
    for marker in ("site-packages/", "/raydaa/"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail if marker == "site-packages/" else f"raydaa/{tail}"
    return os.path.basename(path)


class Beacon:
    """One process's record of one run, rewritten every `BEAT_S` s by a daemon thread."""

    def __init__(self, token: str, who: str) -> None:
        self.token, self.who = token, who
        self._lock = threading.Lock()
        self._record: dict[str, Any] = {
            "who": who, "pid": os.getpid(), "host": socket.gethostname(), "phase": WORKER_START,
            "detail": "", "step": 0, "total": 0, "notes": [], "phase_at": time.time(),
        }
        self._worker_thread = threading.get_ident()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"raydaa-beacon-{who}", daemon=True)
        self._thread.start()

    def phase(self, name: str, detail: str = "") -> None:
        with self._lock:
            self._record.update(phase=name, detail=detail, phase_at=time.time())
            self._worker_thread = threading.get_ident()
        self.flush()

    def stepped(self, step: int, total: int, **metrics: float) -> None:
        with self._lock:
            self._record.update(phase=TRAINING, detail="", step=step, total=total,
                                phase_at=time.time(), **metrics)
            self._worker_thread = threading.get_ident()
        self.flush()

    def note(self, text: str) -> None:
        """A line the driver's progress should print once (e.g. a stale lock cleared)."""
        with self._lock:
            self._record["notes"] = [*self._record["notes"], text][-20:]
        self.flush()

    def flush(self) -> None:
        with self._lock:
            # the thread doing the work (Ray Train runs the loop off the main thread)
            record = dict(self._record, beat_at=time.time(), where=where(self._worker_thread))
        try:
            put(self.token, self.who, record)
        except Exception:  # noqa: BLE001 - a missed beat must never fail the run
            pass

    def close(self, phase: str = DONE) -> None:
        self.phase(phase)
        self._stop.set()

    def _beat(self) -> None:
        while not self._stop.wait(BEAT_S):
            self.flush()


_BEACONS: dict[tuple[str, str], Beacon] = {}


def beacon(token: str, who: str) -> Beacon:
    """This process's beacon for (run, who), started on first use: the backend hook that
    starts it before the process group and the training loop after it share one."""
    key = (token, who)
    if key not in _BEACONS:
        _BEACONS[key] = Beacon(token, who)
    return _BEACONS[key]

"""TensorBoard: a trial's curves in `<trial dir>/steps/` of the Tune experiment, beside the
event file Ray Tune's own TBXLoggerCallback writes in `<trial dir>/` (its results only:
intermediate evaluations and the final one). `tensorboard --logdir <experiment dir>` then
shows runs `<trial name>` (Tune's) and `<trial name>/steps` (every logging step).

Written by hand with tensorboardX (what Ray's TBXLoggerCallback uses): that callback sees
only Tune results, and the step reports must not be Tune results (raydaa/sweep/
intermediate.py). Live in whichever process runs the callback (the trial's driver, or a
Ray Train run's controller, which Ray places on the driver's node): each point is flushed
at once. On object-store Tune storage the files are written to the trial's local working
directory and copied to `<trial dir>/steps/` when the trial ends.
"""

from __future__ import annotations

import os
import time
from typing import Any

from raydaa.sweep.curve_loggers.points import FINAL_METRICS

DIRNAME = "steps"


def trial_logdir() -> tuple[str, Any] | None:
    """(local directory to write, (filesystem, path) to copy it to at the end, or None);
    None outside a Tune trial (a trial driver called on its own)."""
    import pyarrow.fs as pafs
    from ray import tune

    # The trial's storage directory is not public API: Tune's session holds it.
    from ray.train._internal.session import get_session

    storage = getattr(get_session(), "storage", None)
    if storage is None:
        return None
    if isinstance(storage.storage_filesystem, pafs.LocalFileSystem):
        return os.path.join(storage.trial_fs_path, DIRNAME), None
    local = os.path.join(tune.get_context().get_trial_dir(), DIRNAME)
    return local, (storage.storage_filesystem, f"{storage.trial_fs_path}/{DIRNAME}")


class TensorBoardCurves:
    name = "tensorboard"
    live_anywhere = True

    def __init__(self, logdir: str, upload: tuple[Any, str] | None = None) -> None:
        self.logdir, self.upload = logdir, upload
        self._writer = None

    def __getstate__(self) -> dict[str, Any]:  # to a Train controller: it opens its own
        return {**self.__dict__, "_writer": None}

    def writer(self):
        # tensorboardX's synchronous EventsWriter, not its SummaryWriter: that one writes
        # from a thread, whose last points a Train controller's exit would cut off.
        if self._writer is None:
            from tensorboardX.event_file_writer import EventsWriter

            os.makedirs(self.logdir, exist_ok=True)
            # A file of its own, named in the order opened: the controller's and then the
            # driver's may open within one second (the default name holds the second and
            # host only), and TensorBoard reads a directory's files in name order.
            self._writer = EventsWriter(os.path.join(self.logdir, "events"),
                                        f".{time.time_ns()}.{os.getpid()}")
        return self._writer

    def _write(self, step: int, summaries: list) -> None:
        from tensorboardX.proto.event_pb2 import Event

        writer = self.writer()
        for summary in summaries:
            writer.write_event(Event(wall_time=time.time(), step=step, summary=summary))
        writer.flush()

    def log(self, step: int, points: dict[str, float]) -> None:
        from tensorboardX.summary import scalar

        self._write(step, [scalar(tag, value) for tag, value in points.items()])

    def finish(self, step: int, final: dict[str, float], hparams: dict[str, Any],
               result: dict[str, Any]) -> None:
        from tensorboardX.summary import hparams as hparams_summaries
        from tensorboardX.summary import text

        status = f"{result.get('status')} {result.get('error') or ''}".strip()
        self.log(step, final)
        # the HParams dashboard: this run's configuration beside its final quality and KL
        metrics = {tag: final[tag] for tag in FINAL_METRICS if tag in final}
        self._write(step, [text("final/status", status),
                           *hparams_summaries(hparams, metrics)])
        self._writer.close()
        self._writer = None
        if self.upload is not None:
            import pyarrow.fs as pafs

            fs, path = self.upload
            pafs.copy_files(self.logdir, path, source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=fs)

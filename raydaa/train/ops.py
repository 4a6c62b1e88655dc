"""DeepSpeed's CPU ops, built where and when raydaa says, so a killed build strands no one.

On the CPU accelerator `deepspeed.init_distributed` JIT-builds `deepspeed_shm_comm` on first
use, through torch's cpp_extension, which guards the build with a bare `lock` file and
waits on it forever if its builder was killed. By default that build lives in one cache
per user (`~/.cache/torch_extensions/py311_cpu`) that every virtual environment shares,
and two environments rebuild it alternately (their build commands differ by path).

raydaa instead:
- builds into a directory of this environment (`RAYDAA_TORCH_EXTENSIONS_DIR`, else
  `<sys.prefix>/var/raydaa/torch_extensions`, else a per-environment folder under
  `~/.cache/raydaa/`), exported as TORCH_EXTENSIONS_DIR to this process;
- builds under an `fcntl.flock` that the kernel releases when its holder dies: whoever
  holds it and still finds torch's `lock` knows that lock's builder is gone, removes it
  and says so;
- builds before the first trial (`prepare_cpu_ops` on the driver, with progress), and
  again under the same lock in every worker, where DeepSpeed then finds the op loaded.

We write this by hand because neither torch nor DeepSpeed detects a stale build lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ENV_VAR = "RAYDAA_TORCH_EXTENSIONS_DIR"
CPU_OP_BUILDERS = ("ShareMemCommBuilder",)
"""DeepSpeed op builders the CPU accelerator loads in `init_distributed` (gloo runs)."""
_FLOCK_NAME = ".raydaa-build.flock"


def extensions_dir() -> Path:
    """This environment's build directory for torch extensions (created if missing)."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        path = Path(explicit)
        path.mkdir(parents=True, exist_ok=True)
        return path
    inside = Path(sys.prefix) / "var" / "raydaa" / "torch_extensions"
    try:
        inside.mkdir(parents=True, exist_ok=True)
        if os.access(inside, os.W_OK):
            return inside
    except OSError:
        pass  # a read-only interpreter (system Python, an image): fall back to the home cache
    tag = hashlib.sha256(str(Path(sys.prefix).resolve()).encode()).hexdigest()[:12]
    path = Path.home() / ".cache" / "raydaa" / "torch_extensions" / tag
    path.mkdir(parents=True, exist_ok=True)
    return path


def use_private_extensions_dir() -> Path:
    """Point torch's cpp_extension (TORCH_EXTENSIONS_DIR) at this environment's directory."""
    path = extensions_dir()
    os.environ["TORCH_EXTENSIONS_DIR"] = str(path)
    return path


@contextlib.contextmanager
def build_lock(
    directory: Path, *, say: Callable[[str], None], timeout_s: float | None = None
) -> Iterator[None]:
    """Hold the directory's build flock; while another live process holds it, wait (saying
    who) up to `timeout_s`. The kernel drops a flock when its process dies, so a crashed
    builder never leaves this one taken."""
    path = directory / _FLOCK_NAME
    with open(path, "a+") as handle:
        start, told = time.monotonic(), False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    say(f"waiting for {holder} to finish building DeepSpeed ops in {directory}")
                    told = True
                if timeout_s is not None and time.monotonic() - start > timeout_s:
                    raise TimeoutError(
                        f"the DeepSpeed op build lock {path} was held for over {timeout_s:.0f} s"
                    ) from None
                time.sleep(0.5)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename} since {time.strftime('%H:%M:%S')}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def clear_stale_locks(directory: Path, names: list[str], *, say: Callable[[str], None]) -> list[Path]:
    """Remove torch's build `lock` of each op; call only while holding `build_lock`, which
    every raydaa builder holds for the whole build: a lock found then has no live builder."""
    cleared = []
    for name in names:
        lock = directory / name / "lock"
        if lock.exists():
            lock.unlink(missing_ok=True)
            say(f"removed a stale DeepSpeed build lock left by a killed build: {lock}")
            cleared.append(lock)
    return cleared


def _builders() -> list:
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    found = []
    for cls_name in CPU_OP_BUILDERS:
        builder = get_accelerator().create_op_builder(cls_name)
        # the same test DeepSpeed applies before it loads the op (deepspeed/comm/torch.py)
        if builder is not None and deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
            found.append(builder)
    return found


def prepare_cpu_ops(
    *, say: Callable[[str], None] = print, timeout_s: float | None = None
) -> list[str]:
    """Build (or load) the DeepSpeed ops a CPU run loads, in this environment's directory,
    under the build flock, after clearing a stale torch lock. Returns what was said.
    Loaded ops stay cached in DeepSpeed's op builder, so `deepspeed.init_distributed` in
    this process later touches no lock at all."""
    said: list[str] = []

    def tell(text: str) -> None:
        said.append(text)
        say(text)

    directory = use_private_extensions_dir()
    builders = _builders()
    if not builders:
        return said
    with build_lock(directory, say=tell, timeout_s=timeout_s):
        clear_stale_locks(directory, [b.name for b in builders], say=tell)
        for builder in builders:
            built = (directory / builder.name / f"{builder.name}.so").exists()
            if not built:
                tell(
                    f"building DeepSpeed's CPU op {builder.name} (once per environment, about "
                    f"a minute) in {directory / builder.name} ..."
                )
            start = time.perf_counter()
            with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed's own chatter
                builder.load(verbose=False)
            if not built:
                tell(f"built {builder.name} in {time.perf_counter() - start:.0f} s")
    return said

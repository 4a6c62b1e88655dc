"""Helpers shared by `bench_search_overhead.py` and `bench_search_efficiency.py`.

Both benchmarks run the real `raydaa search` command line on a shrunken copy of
`raydaa/search_spaces/` (selected through `$RAYDAA_SEARCH_SPACES`, as tests/test_search.py does),
against results directories that share one reference policy (stage 1) and one reference
log-prob cache, prepared once and not part of any measured sweep.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent

# Ray starts its workers at nice 15, so on a shared machine any other process takes the
# CPU from the trials but not from the no-Ray baseline (nice 0): equal priority for both.
# Ray's temp dir is private to the benchmark: Ray Train V2's PlacementGroupCleaner finds
# "its" cluster through <ray temp>/ray_current_cluster, which names the cluster started
# last on the machine (see benchmarks/README.md).
RAY_ENV = {"RAY_worker_niceness": "0"}
RAY_START_FAILED = "timed out during startup"
"""Ray's node start gives its raylet a fixed 30 s to register (ray/_private/node.py), which
an overloaded shared machine exceeded: such a run is retried (`run_ray_command`)."""


def make_spaces(
    dst: Path,
    *,
    method: str,
    betas: list[float],
    lrs: list[float],
    num_prompts: int,
    global_batch_size: int = 64,
    micro_batch_size: int = 32,
    in_process: bool = True,
) -> Path:
    """A copy of the shipped raydaa/search_spaces/ whose `tiny` scenario is shrunken and whose `method` space
    on tiny is betas × lrs. Returns the copy's root (for $RAYDAA_SEARCH_SPACES).
    `in_process` False: tiny's runs go through Ray Train (resources.in_process)."""
    from raydaa.config.scenario import search_spaces_dir

    root = dst / "search_spaces"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(search_spaces_dir(), root)
    tiny_path = root / "scenarios" / "tiny.yaml"
    tiny = yaml.safe_load(tiny_path.read_text())
    tiny["align"].update(global_batch_size=global_batch_size, micro_batch_size=micro_batch_size)
    tiny["generation"]["num_prompts"] = num_prompts
    tiny["judge"]["num_prompts"] = num_prompts
    tiny["resources"]["in_process"] = in_process
    tiny_path.write_text(yaml.safe_dump(tiny))
    method_path = root / "methods" / f"{method}.yaml"
    space = yaml.safe_load(method_path.read_text())
    space["scenarios"]["tiny"] = {"betas": list(betas), "lrs": list(lrs)}
    method_path.write_text(yaml.safe_dump(space))
    return root


def bench_env(spaces: Path, ray_tmp: Path) -> dict[str, str]:
    ray_tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, RAYDAA_SEARCH_SPACES=str(spaces), RAY_TMPDIR=str(ray_tmp), **RAY_ENV)
    env.pop("RAY_ADDRESS", None)  # always a private local Ray
    return env


class ProcessTree:
    """CPU time (user + system) of a process and every process it starts, transitively
    (for `raydaa search`: the CLI, Ray's daemons, Tune's trial actors, Ray Train's
    controllers and workers), polled from /proc every `interval` seconds. A process is
    counted up to its last poll, so at most `interval` s of each process's end is missed.
    Unlike getrusage(RUSAGE_CHILDREN), it sees processes no parent waits for, and unlike
    wall time it does not grow when other jobs take the CPU (save for Ray's own timed
    polling loops, which run longer when a sweep takes longer)."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, root: int, interval: float = 0.5) -> None:
        self.root, self.interval = root, interval
        self.tracked: set[tuple[int, int]] = set()  # (pid, start time): pids get reused
        self.ticks: dict[tuple[int, int], int] = {}
        self.names: dict[tuple[int, int], str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProcessTree:
        self.poll()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        stats: dict[int, tuple[int, int, int]] = {}  # pid -> (ppid, start, ticks)
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                raw = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            rest = raw[raw.rindex(")") + 2 :].split()  # fields after "(comm)"
            stats[int(entry.name)] = (int(rest[1]), int(rest[19]), int(rest[11]) + int(rest[12]))
        live = {(pid, st[1]) for pid, st in stats.items()}
        alive = {pid for pid, _ in self.tracked & live}
        if self.root in stats:
            alive.add(self.root)
        grew = True
        while grew:  # descendants of the tracked processes still alive
            grew = False
            for pid, (ppid, _, _) in stats.items():
                if ppid in alive and pid not in alive:
                    alive.add(pid)
                    grew = True
        for pid in alive:
            ident = (pid, stats[pid][1])
            self.tracked.add(ident)
            self.ticks[ident] = stats[pid][2]
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                self.names[ident] = title.decode(errors="replace").strip() or self.names.get(
                    ident, "")
            except OSError:
                pass

    @property
    def cpu_seconds(self) -> float:
        return sum(self.ticks.values()) / self.TICK

    def by_process(self) -> list[tuple[str, str, float]]:
        """(kind, command line, CPU seconds) of every process seen."""
        return [
            (self.kind(ident), self.names.get(ident, "")[:120], ticks / self.TICK)
            for ident, ticks in self.ticks.items()
        ]

    def by_kind(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for kind, _, seconds in self.by_process():
            out[kind] = out.get(kind, 0.0) + seconds
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def kind(self, ident: tuple[int, int]) -> str:
        name = self.names.get(ident, "")
        if ident[0] == self.root:
            return "the command's own process"
        for marker, kind in (
            ("ray::RayTrainWorker", "Ray Train workers (DeepSpeed training)"),
            ("ray::ImplicitFunc", "Tune trial drivers (trial_driver: trains in process or "
                                  "waits on Ray Train, then evaluates)"),
            ("ray::TrainController", "Ray Train controllers"),
            ("ray::", "other Ray actors and idle workers"),
            ("raylet", "Ray daemons (raylet, GCS, dashboard, monitors, agents)"),
            ("gcs_server", "Ray daemons (raylet, GCS, dashboard, monitors, agents)"),
            ("ray/dashboard", "Ray daemons (raylet, GCS, dashboard, monitors, agents)"),
            ("ray/_private", "Ray daemons (raylet, GCS, dashboard, monitors, agents)"),
            ("ray/autoscaler", "Ray daemons (raylet, GCS, dashboard, monitors, agents)"),
            ("multiprocessing.forkserver", "Ray daemons (raylet, GCS, dashboard, monitors, agents)"),
            ("ray-dashboard", "Ray daemons (raylet, GCS, dashboard, monitors, agents)"),
        ):
            if marker in name:
                return kind
        return "other child processes"


class CpuBusy:
    """Cores busy on the whole machine (all processes) while a command runs, and the mean
    of the 1-minute load average sampled every 2 s (runnable processes: above the core
    count, processes wait for a CPU)."""

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields), idle

    def _sample(self) -> None:
        while not self._stop.wait(2.0):
            self._loads.append(float(Path("/proc/loadavg").read_text().split()[0]))

    def __enter__(self) -> CpuBusy:
        self._loads: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self.start = self._read()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.load = sum(self._loads) / len(self._loads) if self._loads else float("nan")
        (total0, idle0), (total1, idle1) = self.start, self._read()
        ticks = total1 - total0
        self.cores = (ticks - (idle1 - idle0)) / ticks * (os.cpu_count() or 1) if ticks else 0.0


def run_logged(cmd: list[str], env: dict[str, str], log: Path) -> tuple[int, float, CpuBusy]:
    """Run `cmd` with stdout+stderr to `log`; returns (returncode, wall seconds, CpuBusy),
    the CpuBusy carrying `cpu_seconds`, `cpu_by_kind` and `cpu_by_process` of the command's
    process tree."""
    with open(log, "w") as out, CpuBusy() as busy:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        with ProcessTree(proc.pid) as tree:
            proc.wait()
        wall = time.perf_counter() - start
    busy.cpu_seconds = tree.cpu_seconds
    busy.cpu_by_kind = tree.by_kind()
    busy.cpu_by_process = tree.by_process()
    return proc.returncode, wall, busy


def run_ray_command(
    cmd: list[str], env: dict[str, str], log: Path, tries: int = 3
) -> tuple[int, float, CpuBusy, int]:
    """`run_logged`, retried when the local Ray node failed to start (nothing ran yet);
    returns the last attempt's numbers and how many attempts failed that way."""
    failed = 0
    while True:
        rc, wall, busy = run_logged(cmd, env, log)
        if rc == 0 or RAY_START_FAILED not in log.read_text(errors="replace"):
            return rc, wall, busy, failed
        failed += 1
        if failed >= tries:
            return rc, wall, busy, failed
        print(f"Ray did not start in time ({log}); retrying", flush=True)
        time.sleep(30)


def raydaa_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "raydaa.cli", *args]


def ensure_reference(base: Path, env: dict[str, str], init: str, logs: Path) -> dict[str, Any]:
    """Stage 1 in `base` (`raydaa sft`, or `raydaa sft --base`), reused when registered."""
    record_path = base / "tiny" / "reference.json"
    if record_path.exists():
        record = json.loads(record_path.read_text())
        if record.get("init") == init:
            return {"record": record, "seconds": None, "reused": True}
    args = ["sft", "--results", str(base)] + (["--base"] if init == "base" else [])
    rc, wall, _ = run_logged(raydaa_cmd(*args), env, logs / "sft.log")
    if rc != 0:
        raise RuntimeError(f"raydaa sft failed; see {logs / 'sft.log'}")
    return {"record": json.loads(record_path.read_text()), "seconds": wall, "reused": False}


PREPARE = """
import json, sys, time
from raydaa.evaluate.generation import render_prompts
from raydaa.evaluate.policy import baseline_answers, validation_rows
from raydaa.core.losses import get_spec
from raydaa.config.scenario import load_scenario
from raydaa.data.tokenize import load_tokenizer
from raydaa.train.stages import prepare_alignment, reference_record
start = time.perf_counter()
scenario = load_scenario("tiny")
# First the reference policy's own samples on the evaluation prompts (the judge's baseline
# answers, cached as baseline_samples.json inside the reference checkpoint directory), then
# the reference log-prob cache: the cache key hashes every file of that directory, so
# writing the samples after the cache would orphan it (the next sweep recomputes it).
tokenizer = load_tokenizer(scenario)
prompts = [r["prompt"] for r in validation_rows(scenario)]
ids = render_prompts(prompts, tokenizer, scenario.data.format == "conversational")
baseline_answers(scenario, reference_record(sys.argv[1], scenario)["path"], tokenizer, ids)
# (Ray starts on its own, only if the cache must be computed.)
shared = prepare_alignment(scenario, results=sys.argv[1],
                           needs_reference=get_spec(sys.argv[2]).needs_reference)
print(json.dumps({"cache": shared.cache, "seconds": time.perf_counter() - start}))
"""


def ensure_cache(base: Path, env: dict[str, str], method: str, logs: Path) -> float:
    """Tokenized preference data, the reference log-prob cache and the reference's samples
    on the evaluation prompts, in `base` (shared by every trial of every sweep copied from
    it). Returns the wall time of the call."""
    cmd = [sys.executable, "-c", PREPARE, str(base), method]
    rc, wall, _ = run_logged(cmd, env, logs / "prepare.log")
    if rc != 0:
        raise RuntimeError(f"prepare_alignment failed; see {logs / 'prepare.log'}")
    return wall


def fresh_results(base: Path, dst: Path) -> Path:
    """A results dir holding `base`'s reference record, tokenized data and reference cache,
    but no sweep state (no store, Tune experiment, runs or Optuna study)."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    shutil.copytree(
        base / "tiny",
        dst / "tiny",
        ignore=shutil.ignore_patterns("store", "tune", "runs", "optuna.db", "baseline"),
    )
    return dst


def store_rows(results: Path, method: str) -> list[dict[str, Any]]:
    """The results-store rows of a sweep: in Tune's trial order where the trial ids end in
    a counter (grid: `<experiment>_00003`), else in the order the rows were written
    (Optuna's trial ids are random hex)."""
    from raydaa.io.results_store import read_store, store_dir

    rows = read_store(results, "tiny", method).to_pylist()
    directory = store_dir(results, "tiny") / method

    def order(row: dict[str, Any]) -> tuple[int, float]:
        tail = row["trial_id"].rsplit("_", 1)[-1]
        if "_" in row["trial_id"] and tail.isdigit():
            return (0, float(tail))
        return (1, (directory / f"{row['trial_id']}.parquet").stat().st_mtime)

    return sorted(rows, key=order)


def machine() -> str:
    import deepspeed
    import optuna
    import ray
    import torch
    import transformers

    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return (
        f"{cpu}, {os.cpu_count()} cores, no GPU; Python {platform.python_version()}, "
        f"ray {ray.__version__}, torch {torch.__version__}, deepspeed {deepspeed.__version__}, "
        f"optuna {optuna.__version__}, transformers {transformers.__version__}"
    )


def append_section(path: Path, text: str) -> None:
    """Append one section to RESULTS.md (created with its top heading if missing); other
    sections are left as they are."""
    if not path.exists():
        path.write_text("# Benchmark results\n")
    current = path.read_text()
    sep = "" if current.endswith("\n\n") else ("\n" if current.endswith("\n") else "\n\n")
    with open(path, "a") as out:
        out.write(sep + text.rstrip("\n") + "\n")


def output_arguments(parser, results_md: Path) -> None:
    """The options every benchmark shares: where the tiny reference lives and where its
    numbers go (RESULTS.md, raw JSON, a note line)."""
    parser.add_argument("--results", default=None,
                        help="results dir holding (or to hold) the tiny reference; "
                             "default: a new temp dir")
    parser.add_argument("--out", default=str(results_md),
                        help="RESULTS.md to append to ('' to skip)")
    parser.add_argument("--json", default=None, help="write the raw numbers here")
    parser.add_argument("--note", default="", help="a line added to the RESULTS.md section")


def work_dirs(prefix: str, results: str | None, work: Path | None = None) -> tuple[Path, Path, Path]:
    """A benchmark's work dir (new unless given), the results dir holding the reference
    (`results`, else one inside the work dir) and the logs dir, all created."""
    work = work or Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    base = Path(results).resolve() if results else work / "base"
    base.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    return work, base, logs


def publish(report: dict[str, Any], render, json_path: str | None, out_path: str | None) -> None:
    """Write the raw report as JSON, print its Markdown, and append it to RESULTS.md."""
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2, default=str))
    text = render(report)
    print(text)
    if out_path:
        append_section(Path(out_path), text)


def fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"

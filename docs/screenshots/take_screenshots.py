"""Screenshots for docs/watching.md, taken in a real browser (headless Chromium) while a
tiny sweep runs, the way a user would open what `raydaa search` prints:

    python docs/screenshots/take_screenshots.py --results /tmp/shots/raydaa_results

It starts `raydaa search` (an Optuna DPO sweep under ASHA, tiny with an intermediate
evaluation every 8 steps, TensorBoard curves on), logs in to the
Ray dashboard with the token `ray get-auth-token` prints, starts Prometheus through
`raydaa dashboard`, and while trials run, photographs the dashboard's views and the
Prometheus graph of raydaa's series; once the sweep ends, TensorBoard and
optuna-dashboard. Needs Debian's `chromium` and `prometheus`, and `pip install
playwright tensorboard optuna-dashboard` (playwright drives the system Chromium: no
browser download).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

OUT = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Command:
    """A background command whose output is kept line by line."""

    def __init__(self, args: list[str], **kw) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True, **kw)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            print("  |", line.rstrip("\n")[:160], flush=True)

    def wait_for(self, pattern: str, timeout: float = 900) -> re.Match:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in self.lines:
                if m := re.search(pattern, line):
                    return m
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args[:3]} exited before {pattern!r}")
            time.sleep(0.5)
        raise TimeoutError(pattern)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 2)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)


def wait_http(url: str, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except Exception:
            time.sleep(1)
    raise TimeoutError(url)


def shoot(page, url: str, name: str, wait_s: float = 6, full: bool = False) -> None:
    page.goto(url)
    time.sleep(wait_s)  # the views fetch and draw after load
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=full)
    print(f"wrote {OUT / name}.png", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True)
    parser.add_argument("--trials", type=int, default=12)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    bin_dir = Path(sys.executable).parent
    raydaa, ray = str(bin_dir / "raydaa"), str(bin_dir / "ray")
    spaces = Path(args.results).parent / "search_spaces"
    tiny = spaces / "scenarios" / "tiny.yaml"
    tiny.parent.mkdir(parents=True, exist_ok=True)
    from raydaa.config.scenario import search_spaces_dir

    text = (search_spaces_dir() / "scenarios" / "tiny.yaml").read_text()
    tiny.write_text(text.replace("eval_every: null", "eval_every: 8", 1))
    # a Ray temp dir of its own: `raydaa dashboard` finds this sweep's session, never
    # another Ray's session_latest on the machine
    temp = Path(args.results).parent / "raytmp"
    os.environ["RAY_TMPDIR"] = str(temp)
    sweep = Command([raydaa, "search", "--method", "dpo", "--mode", "optuna", "--space",
                     "continuous", "--num-trials", str(args.trials), "--scheduler", "asha", "--search-spaces", str(spaces),
                     "--results", args.results, "--log-to", "tensorboard"])
    dashboard = sweep.wait_for(r"dashboard (http://\S+)").group(1)
    token = subprocess.run([ray, "get-auth-token"], capture_output=True, text=True,
                           check=True).stdout.strip()
    sweep.wait_for(r"RUNNING", timeout=1800)  # Tune's table: the first trials train
    metrics = Command([raydaa, "dashboard", "--wait", "--scrape-interval", "2s",
                       "--temp-dir", str(temp / "ray")])
    prometheus = metrics.wait_for(r"Prometheus:?\s+(http://\S+)", timeout=120).group(1)
    time.sleep(30)  # a few scrapes of the running trials and their first evaluations
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"),
                                     args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        shoot(page, dashboard, "ray_dashboard_login", wait_s=4)
        page.get_by_role("textbox", name="Authentication Token").fill(token)  # as a user does
        page.get_by_role("button", name="Submit").click()
        shoot(page, f"{dashboard}/#/overview", "ray_dashboard_overview")
        shoot(page, f"{dashboard}/#/actors", "ray_dashboard_actors")
        shoot(page, f"{dashboard}/#/jobs", "ray_dashboard_jobs")
        graphs = {  # Prometheus's own graph page: the queries of the Grafana panels
            "prometheus_progress": "max by (trial) (ray_raydaa_train_step)"
                                   " / max by (trial) (ray_raydaa_train_total_steps)",
            "prometheus_trials_by_state": "max by (state) (ray_raydaa_sweep_trials)",
            "prometheus_eval_quality": "max by (trial) (ray_raydaa_eval_quality)",
        }
        for name, expr in graphs.items():
            shoot(page, f"{prometheus}/graph?g0.expr={quote(expr)}&g0.tab=0"
                  "&g0.range_input=5m", name, wait_s=5)
        sweep.proc.wait(timeout=3600)
        metrics.stop()
        experiment = next(Path(args.results).glob("tiny/tune/dpo-*"))
        port = free_port()
        board = Command([str(bin_dir / "tensorboard"), "--logdir", str(experiment),
                         "--port", str(port), "--bind_all"])
        wait_http(f"http://127.0.0.1:{port}")
        page.goto(f"http://127.0.0.1:{port}/#timeseries")
        time.sleep(8)
        page.locator("input[placeholder='Filter tags (regex)']").first.fill("train/loss|eval/quality$")
        page.locator("input[placeholder='Filter runs (regex)']").first.fill("steps")  # per-step runs
        time.sleep(4)
        page.screenshot(path=str(OUT / "tensorboard.png"))
        board.stop()
        port = free_port()
        db = Path(args.results) / "tiny" / "optuna.db"
        optuna = Command([str(bin_dir / "optuna-dashboard"), f"sqlite:///{db}", "--port",
                          str(port)])
        wait_http(f"http://127.0.0.1:{port}")
        shoot(page, f"http://127.0.0.1:{port}/dashboard/studies/1", "optuna_dashboard",
              wait_s=8, full=True)
        optuna.stop()
        browser.close()
    sweep.stop()


if __name__ == "__main__":
    main()

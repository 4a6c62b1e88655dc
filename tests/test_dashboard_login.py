"""The dashboard line a command prints is enough to get in: a fresh local Ray (token
authentication on, as Ray >= 2.52 starts one) prints its URL and how to get the token,
and the token that command prints opens the dashboard's API, which refuses a request
without it. Run in a process of its own with its own HOME, so the token Ray generates is
this test's, never the machine user's ~/.ray/auth_token.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

pytestmark = [pytest.mark.ray]

CONNECT = (
    "import sys; from raydaa.io.ray_connection import connect_ray; connect_ray(None); "
    "print('connected', flush=True); sys.stdin.readline()"  # holds the Ray until the test is done
)


def status(url: str, token: str | None) -> int:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def fetch_json(url: str, token: str):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_the_printed_dashboard_line_says_how_to_log_in(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env |= {"HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", CONNECT, "search", "--method", "dpo"], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        lines = iter(proc.stdout.readline, "")
        printed = "".join(iter(lambda: next(lines), "connected\n"))
        url = re.search(r"dashboard (http://\S+)", printed)
        assert url, printed
        assert "`ray get-auth-token`" in printed and "ray dashboard cluster.yaml" in printed
        ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
        token = subprocess.run([ray_cli, "get-auth-token"], env=env, capture_output=True,
                               text=True, check=True).stdout.strip()
        assert token
        api = f"{url.group(1)}/nodes?view=summary"
        assert status(api, None) == 401  # what the browser meets before it logs in
        assert status(api, "not-the-token") == 403
        assert status(api, token) == 200
        # the Jobs view's Name column: the command as typed (argv after `-c`)
        jobs = fetch_json(f"{url.group(1)}/api/jobs/", token)
        assert [j["metadata"].get("job_name") for j in jobs] == ["raydaa search --method dpo"], jobs
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)

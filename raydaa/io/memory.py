"""What this process holds: its peak resident memory (training, scoring and evaluation
all report it, so it sits below them)."""

from __future__ import annotations

import resource
import sys


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (ru_maxrss: KiB on Linux, bytes
    on macOS). A reused Ray worker reports the peak of its whole life."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024

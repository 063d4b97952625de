"""Progress of long command-line jobs: a bar with rate and ETA on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """Report ``update(done, total)`` calls on a stream (stderr by default).

    On a terminal the bar redraws in place at most every ``every`` seconds; elsewhere (a log, cron,
    CI) it prints a plain line at most every ``plain_every`` seconds, and nothing for a job shorter
    than that, so logs stay short.
    """

    def __init__(
        self,
        label: str,
        unit: str = "lines",
        stream: TextIO | None = None,
        every: float = 0.2,
        plain_every: float = 10.0,
        clock=time.monotonic,
    ):
        self.label, self.unit = label, unit
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every if self.tty else plain_every
        self.clock = clock
        self.started = clock()
        self.last_shown: float | None = None
        self.last_values: tuple[float, int] | None = None
        self.count = 0

    def update(self, done: float, total: float, count: int | None = None) -> None:
        """``done`` of ``total`` (any unit, e.g. bytes); ``count`` is the number of items so far."""
        self.count = count if count is not None else int(done)
        moment = self.clock()
        if not self.tty and self.last_shown is None and moment - self.started < self.every:
            return  # a short job stays quiet in logs: its result says enough
        if self.last_shown is not None and (moment - self.last_shown < self.every and done < total):
            return
        if (done, self.count) == self.last_values:
            return
        self.last_values = (done, self.count)
        self.last_shown = moment
        self.stream.write(self.line(done, total, moment))
        self.stream.flush()

    def line(self, done: float, total: float, moment: float) -> str:
        """The progress text for one update (with ``\\r`` on a terminal, a newline elsewhere)."""
        elapsed = max(moment - self.started, 1e-9)
        rate = self.count / elapsed
        share = min(1.0, done / total) if total else None
        eta = elapsed * (1 - share) / share if share else None
        parts = [self.label]
        if share is not None and self.tty:
            filled = int(24 * share)
            parts.append(f"[{'#' * filled}{'-' * (24 - filled)}] {share:4.0%}")
        elif share is not None:
            parts.append(f"{share:.0%}")
        parts.append(f"{self.count:,} {self.unit}, {rate:,.0f}/s")
        if eta is not None and share is not None and share < 1:
            parts.append(f"ETA {_duration(eta)}")
        text = "  ".join(parts)
        return f"\r{text}\x1b[K" if self.tty else text + "\n"

    def close(self) -> None:
        """End the bar's line on a terminal."""
        if self.tty and self.last_shown is not None:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"

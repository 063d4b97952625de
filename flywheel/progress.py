"""Progress of long command-line jobs on stderr, drawn by tqdm: a bar with rate and ETA on a terminal,
plain lines otherwise."""

from __future__ import annotations

import sys
from typing import TextIO

_TERMINAL = "{desc}  [{bar:24}] {percentage:3.0f}%{postfix}  ETA {remaining}"
_PLAIN = "{desc}  {percentage:.0f}%{postfix}  ETA {remaining}"


class _Lines:
    """A log's view of tqdm's redraws: each frame becomes one plain line (no carriage returns)."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


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
    ):
        # tqdm loads on the first bar: its package imports a pandas adapter module, and ``--help`` needs none.
        from tqdm import tqdm

        self.unit = unit
        stream = stream or sys.stderr
        self.tty = stream.isatty()
        self.count = 0
        self.bar = tqdm(
            desc=label,
            file=stream if self.tty else _Lines(stream),
            bar_format=_TERMINAL if self.tty else _PLAIN,
            ascii="-#",
            mininterval=every if self.tty else plain_every,
            delay=0 if self.tty else plain_every,
            total=0,
            dynamic_ncols=False,
            ncols=200,
        )

    def update(self, done: float, total: float, count: int | None = None) -> None:
        """``done`` of ``total`` (any unit, e.g. bytes); ``count`` is the number of items so far."""
        self.count = count if count is not None else int(done)
        elapsed = max(self.bar.format_dict["elapsed"], 1e-9)
        self.bar.total = total or None
        self.bar.set_postfix_str(f"{self.count:,} {self.unit}, {self.count / elapsed:,.0f}/s", refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        """End the bar's line."""
        self.bar.close()


_current: ProgressBar | None = None  # the bar ``stderr_progress`` draws, until ``clear_progress``


def stderr_progress(done: int, total: int) -> None:
    """A ``(done, total)`` progress callback drawing one bar on stderr."""
    global _current
    if _current is None:
        _current = ProgressBar("", unit="items")
    _current.update(done, total)


def clear_progress() -> None:
    """End the bar ``stderr_progress`` drew."""
    global _current
    if _current is not None:
        _current.close()
        _current = None

"""Progress of long loops: a rich bar on a terminal, plain lines in a log file.

One helper for every stage: :class:`Progress` (a loop with a known length: pretraining steps,
feature extraction for distances) draws a rich progress bar when stderr is a terminal; otherwise
it prints one plain line at most every :func:`plain_every` seconds (and a last one on close),
e.g.::

    pretrain: step 40/500 (8%) | images 10,240/128,000 | 1,234 img/s | loss 4.5123 | ETA 1m 30s

so that a run in a log file (a SLURM job, ``nohup``, a notebook) is not silent. The interval is
``DIVSSL_PROGRESS_SECONDS`` (default 10 s; 0 prints every update). :class:`Activity` covers a
call of unknown length (a probe, an evaluation of a study): a spinner on a terminal, otherwise a
start line, a heartbeat line every interval and an end line with the elapsed time.

The rate and ETA count only what this session did (a resumed run does not count the images of
its checkpoint as done in no time).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO, TypeVar

from divssl.errors import ConfigError

T = TypeVar("T")
DEFAULT_PLAIN_SECONDS = 10.0  # one line per 10 s: ~360 lines per hour of training
PLAIN_SECONDS_ENV = "DIVSSL_PROGRESS_SECONDS"


def plain_every() -> float:
    """Seconds between plain lines: ``$DIVSSL_PROGRESS_SECONDS`` or 10.

    Raises:
        ConfigError: naming the variable, for a value that is not a number of seconds >= 0.
    """
    raw = os.environ.get(PLAIN_SECONDS_ENV)
    if raw is None or raw == "":
        return DEFAULT_PLAIN_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= 0:  # also refuses nan
        raise ConfigError(PLAIN_SECONDS_ENV, f"must be a number of seconds >= 0, got {raw!r}")
    return value


def format_eta(seconds: float | None) -> str:
    """``1h 02m``, ``3m 05s`` or ``-``."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 60}m {s % 60:02d}s"


class Progress:
    """Progress of one loop over ``total`` units (steps or images).

    Args:
        label: what runs (``pretrain``, ``features train``).
        total: units in all (``done`` reaches it at the end).
        unit: the unit's name in plain lines (``step`` -> ``step 40/500``).
        start: units already done before this session (a resumed run).
        images_total: images at the end, when units are steps (shown with img/s).
        images_start: images already processed before this session.
        enabled: ``False`` draws nothing (other DDP ranks).
        stream: where plain lines go (default ``sys.stderr``); a terminal gets the rich bar.
    """

    def __init__(
        self,
        label: str,
        total: int,
        unit: str = "step",
        start: int = 0,
        images_total: int | None = None,
        images_start: int = 0,
        enabled: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.label = label
        self.total = max(0, int(total))
        self.unit = unit
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.images_total = images_total
        self.done = start
        self.images = images_start
        self.start_units = start
        self.start_images = images_start
        self.fields: dict[str, Any] = {}
        self.every = plain_every()
        self.t0 = time.perf_counter()
        self.last_line: float | None = None
        self.printed_done: int | None = None
        self.bar: Any = None
        if enabled and self.stream.isatty():
            self._start_bar()

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn(self.label),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} " + self.unit + "s"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[extra]}"),
            TimeRemainingColumn(),
            console=Console(file=self.stream),
        )
        self.task = self.bar.add_task(
            self.label, total=self.total, completed=self.done, rate="", extra=""
        )
        self.bar.start()

    # ----------------------------------------------------------------------------- numbers

    def elapsed(self) -> float:
        """Seconds since this session started."""
        return time.perf_counter() - self.t0

    def rate(self) -> float | None:
        """Images (or units when no images are counted) per second this session."""
        dt = self.elapsed()
        gained = (
            self.images - self.start_images
            if self.images_total is not None
            else self.done - self.start_units
        )
        return gained / dt if dt > 0 and gained > 0 else None

    def eta(self) -> float | None:
        """Seconds left at this session's rate (``None`` before any progress)."""
        rate = self.rate()
        if rate is None:
            return None
        left = (
            self.images_total - self.images
            if self.images_total is not None
            else self.total - self.done
        )
        return max(0.0, left) / rate

    def line(self) -> str:
        """The plain line of the current state."""
        pct = 100.0 * self.done / self.total if self.total else 100.0
        parts = [f"{self.label}: {self.unit} {self.done:,}/{self.total:,} ({pct:.0f}%)"]
        rate = self.rate()
        if self.images_total is not None:
            parts.append(f"images {self.images:,}/{self.images_total:,}")
            parts.append(f"{rate:,.0f} img/s" if rate else "- img/s")
        else:
            parts.append(f"{rate:,.1f} {self.unit}/s" if rate else f"- {self.unit}/s")
        parts += [f"{k} {_fmt(v)}" for k, v in self.fields.items()]
        parts.append(f"ETA {format_eta(self.eta())}")
        return " | ".join(parts)

    # ----------------------------------------------------------------------------- updates

    def update(self, done: int, images: int | None = None, **fields: Any) -> None:
        """Record progress: ``done`` units in total, ``images`` processed in total, and extra
        fields shown as ``name value`` (``loss=4.51``)."""
        if not self.enabled:
            return
        self.done = int(done)
        if images is not None:
            self.images = int(images)
        self.fields.update(fields)
        if self.bar is not None:
            rate = self.rate()
            unit = "img/s" if self.images_total is not None else f"{self.unit}/s"
            self.bar.update(
                self.task,
                completed=self.done,
                rate=f"{rate:,.0f} {unit}" if rate else "",
                extra=" ".join(f"{k} {_fmt(v)}" for k, v in self.fields.items()),
            )
            return
        now = time.perf_counter()
        if self.last_line is None or now - self.last_line >= self.every:
            self._print(now)

    def advance(self, units: int = 1, images: int = 0) -> None:
        """Add ``units`` (and ``images``) to the counts."""
        self.update(self.done + units, self.images + images if images else None)

    def _print(self, now: float) -> None:
        print(self.line(), file=self.stream, flush=True)
        self.last_line = now
        self.printed_done = self.done

    def close(self) -> None:
        """Stop the bar, or print the last plain line (unless it was just printed)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        elif self.printed_done != self.done:
            self._print(time.perf_counter())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


class Activity:
    """A call of unknown length, shown while it runs (``with Activity("linear probe t"):``).

    On a terminal: a rich spinner with the elapsed time. Otherwise plain lines: ``label: started``,
    ``label: running, 40 s`` every :func:`plain_every` seconds (from a daemon thread; none when
    the interval is 0), and ``label: done in 52 s`` (or ``failed after``) at the end.

    Args:
        label: what runs.
        stream: where lines go (default ``sys.stderr``).
    """

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.every = plain_every()
        self.t0 = time.perf_counter()
        self.status: Any = None
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def _say(self, text: str) -> None:
        print(f"{self.label}: {text}", file=self.stream, flush=True)

    def _heartbeat(self) -> None:
        while not self.stopped.wait(self.every):
            self._say(f"running, {time.perf_counter() - self.t0:.0f} s")

    def __enter__(self) -> Activity:
        self.t0 = time.perf_counter()
        if self.stream.isatty():
            from rich.console import Console

            self.status = Console(file=self.stream).status(self.label)
            self.status.start()
            return self
        self._say("started")
        if self.every > 0:
            self.thread = threading.Thread(target=self._heartbeat, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join()
        if self.status is not None:
            self.status.stop()
            return
        word = "done in" if exc_type is None else "failed after"
        self._say(f"{word} {time.perf_counter() - self.t0:.1f} s")


def run_with_activity(label: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` inside ``Activity(label)`` (a one-line change at a call site)."""
    with Activity(label):
        return fn(*args, **kwargs)

"""Progress: plain lines without a terminal (throttled), numbers of the line, the ETA format."""

from __future__ import annotations

import io

import pytest

from divssl import progress as P
from divssl.errors import ConfigError


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    c = _Clock()
    monkeypatch.setattr(P.time, "perf_counter", c)
    return c


def test_plain_lines_are_throttled_and_carry_step_images_rate_eta(clock, monkeypatch):
    monkeypatch.setenv(P.PLAIN_SECONDS_ENV, "10")
    out = io.StringIO()  # not a terminal
    bar = P.Progress("pretrain", 100, images_total=1000, stream=out)
    clock.now += 2
    bar.update(1, 10, loss=4.5)  # first update: printed
    clock.now += 5
    bar.update(2, 20, loss=4.4)  # 5 s later: throttled
    clock.now += 8
    bar.update(30, 300, loss=4.0)  # 13 s after the first line: printed
    bar.close()  # the last state was printed: no repeat
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0] == (
        "pretrain: step 1/100 (1%) | images 10/1,000 | 5 img/s | loss 4.5000 | ETA 3m 18s"
    )  # 10 images in 2 s; 990 left at 5 img/s = 198 s
    assert lines[1] == (
        "pretrain: step 30/100 (30%) | images 300/1,000 | 20 img/s | loss 4.0000 | ETA 0m 35s"
    )  # 300 images in 15 s; 700 left at 20 img/s


def test_close_prints_the_final_state_once(clock, monkeypatch):
    monkeypatch.setenv(P.PLAIN_SECONDS_ENV, "60")
    out = io.StringIO()
    bar = P.Progress("features", 50, unit="batch", stream=out)
    clock.now += 1
    bar.advance(10)
    clock.now += 1
    bar.advance(40)
    bar.close()
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines == [
        "features: batch 10/50 (20%) | 10.0 batch/s | ETA 0m 04s",
        "features: batch 50/50 (100%) | 25.0 batch/s | ETA 0m 00s",
    ]


def test_resumed_session_rates_count_only_this_session(clock):
    out = io.StringIO()
    bar = P.Progress("pretrain", 10, start=5, images_total=100, images_start=50, stream=out)
    assert bar.rate() is None and bar.eta() is None
    clock.now += 10
    bar.update(6, 60)
    assert bar.rate() == pytest.approx(1.0)  # 10 images in 10 s, not 60
    assert bar.eta() == pytest.approx(40.0)


def test_disabled_progress_prints_nothing(clock):
    out = io.StringIO()
    bar = P.Progress("pretrain", 10, enabled=False, stream=out)
    bar.update(5, 50)
    bar.close()
    assert out.getvalue() == ""


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "-"), (0, "0m 00s"), (65.4, "1m 05s"), (3725, "1h 02m")]
)
def test_format_eta(seconds, text):
    assert P.format_eta(seconds) == text


def test_plain_every_reads_the_environment(monkeypatch):
    monkeypatch.delenv(P.PLAIN_SECONDS_ENV, raising=False)
    assert P.plain_every() == P.DEFAULT_PLAIN_SECONDS
    monkeypatch.setenv(P.PLAIN_SECONDS_ENV, "2.5")
    assert P.plain_every() == 2.5
    for bad in ("-1", "soon", "nan"):
        monkeypatch.setenv(P.PLAIN_SECONDS_ENV, bad)
        with pytest.raises(ConfigError) as info:
            P.plain_every()
        assert info.value.field == P.PLAIN_SECONDS_ENV


def test_activity_prints_start_and_end_lines(clock, monkeypatch):
    monkeypatch.setenv(P.PLAIN_SECONDS_ENV, "0")  # no heartbeat thread
    out = io.StringIO()
    with P.Activity("linear probe t", stream=out):
        clock.now += 3.25
    with pytest.raises(RuntimeError), P.Activity("knn t", stream=out):
        raise RuntimeError("boom")
    assert out.getvalue().splitlines() == [
        "linear probe t: started",
        "linear probe t: done in 3.2 s",
        "knn t: started",
        "knn t: failed after 0.0 s",
    ]


class _Signalling(io.StringIO):
    """A stream that says when a heartbeat line arrived."""

    def __init__(self) -> None:
        super().__init__()
        import threading

        self.beat = threading.Event()

    def write(self, text: str) -> int:
        if "running" in text:
            self.beat.set()
        return super().write(text)


def test_activity_heartbeat_runs_while_the_call_runs(monkeypatch):
    monkeypatch.setenv(P.PLAIN_SECONDS_ENV, "0.01")
    out = _Signalling()
    with P.Activity("probe", stream=out):
        assert out.beat.wait(timeout=60)  # a heartbeat line while the block runs
    lines = out.getvalue().splitlines()
    assert lines[0] == "probe: started" and lines[-1].startswith("probe: done in ")
    assert any(ln.startswith("probe: running, ") for ln in lines[1:-1])
    count = len(lines)
    assert len(out.getvalue().splitlines()) == count  # the thread stopped with the block


def test_run_with_activity_returns_the_result_and_frames_it(monkeypatch):
    monkeypatch.setenv(P.PLAIN_SECONDS_ENV, "0")
    monkeypatch.setattr(P.sys, "stderr", io.StringIO())
    assert P.run_with_activity("sum", sum, [1, 2, 3], start=4) == 10
    lines = P.sys.stderr.getvalue().splitlines()
    assert lines[0] == "sum: started" and lines[1].startswith("sum: done in ")

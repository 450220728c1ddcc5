"""Decoder workers run below the scorer's CPU priority (the stream's ``nice`` setting), also
where the kernel weighs each session's autogroup instead of each process."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import wait_for
from engines.views import InputView
from monitor.source import StreamListener, StreamWorker
from monitor.stream_config import StreamConfig

SAMPLE = Path(__file__).resolve().parents[1] / "monitor" / "samples" / "bigbuckbunny.mp4"


def _nice(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])  # field 19, after the command name


@pytest.mark.parametrize("nice", [19, 0])
def test_worker_process_runs_at_the_streams_nice_value(nice):
    w = StreamWorker(StreamConfig(name="s", url=str(SAMPLE), loop=True, nice=nice),
                     InputView(mode="resize", size=64), StreamListener())
    w.start()
    try:
        pid = wait_for(lambda: w.pid if w.stream.state == "up" else None, 20, message="the worker up")
        assert _nice(pid) == _nice(os.getpid()) + nice
        group = Path(f"/proc/{pid}/autogroup")
        if group.exists():  # kernels built with autogroups (enabled or not at run time)
            assert group.read_text().split()[-1] == str(nice)
    finally:
        w.stop()
        w.join()

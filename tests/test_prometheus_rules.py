"""Prometheus rules / config and Alertmanager config, checked offline with promtool and amtool.

The binaries come from Debian (``apt-get install prometheus prometheus-alertmanager``); tests
that need them skip, saying so, where they are not installed (a failure under ``./dev test``,
VQMON_STRICT=1). The checks that only read the YAML (no foreign metric, test coverage of every
alert) always run; the vqmon metric names the rules use are checked against the live registry
in test_deploy.py.
"""
from __future__ import annotations

import importlib.util
import io
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "rules" / "vqmon.rules.yml"
PROM_TESTS = sorted((PROM / "tests").glob("*.yml"))
AM = ROOT / "deploy" / "alertmanager"
AM_CONFIG = AM / "alertmanager.yml"

PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
need_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")
need_amtool = pytest.mark.skipif(
    AMTOOL is None, reason="amtool not installed (apt-get install prometheus-alertmanager)")
need_alertmanager = pytest.mark.skipif(
    ALERTMANAGER is None, reason="alertmanager not installed (apt-get install prometheus-alertmanager)")


def _rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def _alerts() -> list[dict]:
    return [r for r in _rules() if "alert" in r]


def _run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


# -- YAML-only checks -------------------------------------------------------------------------------

def test_rules_use_no_other_metric_than_up():
    """Besides vqmon's own metrics (checked against the live registry, monitor.metrics, in
    test_deploy.test_rules_and_dashboard_use_only_exported_metrics), only Prometheus' ``up``."""
    others = set()
    for r in _rules():
        expr = re.sub(r'"[^"]*"', '""', r["expr"])  # drop label values
        expr = re.sub(r"\{[^}]*\}", "", expr)  # drop matchers
        expr = re.sub(r"\[[^\]]*\]", "", expr)  # drop ranges
        for tok in re.findall(r"\b([a-zA-Z_][a-zA-Z0-9_]*)\b(?!\s*\()", expr):
            if not tok.startswith("vqmon_"):
                others.add(tok)
    keywords = {"and", "or", "unless", "by", "without", "on", "ignoring", "offset", "le", "job",
                "instance", "group_left", "group_right", "bool",
                # aggregation operators, which may be followed by "by (...)"
                "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk",
                "quantile", "count_values"}
    assert others - keywords <= {"up"}, others - keywords


def test_expected_alerts_exist_with_severity_and_annotations():
    alerts = {a["alert"]: a for a in _alerts()}
    for name in ("VqmonQualityLow", "VqmonQualityDrop", "VqmonStreamDown", "VqmonFrozen", "VqmonBlack",
                 "VqmonBlocky", "VqmonStalled", "VqmonDown"):
        assert name in alerts, name
    # quality_low is the engine's, set per stream (no absolute default: docs/degradations.md)
    assert alerts["VqmonQualityLow"]["expr"] == 'vqmon_alert_active{condition="quality_low"} == 1'
    assert "vqmon_quality_score" in alerts["VqmonQualityDrop"]["expr"]
    assert alerts["VqmonStreamDown"]["for"] == "30s"
    assert alerts["VqmonStreamDown"]["labels"]["severity"] == "critical"
    assert 'up{job="vqmon"} == 0' in alerts["VqmonDown"]["expr"]
    for name, a in alerts.items():
        ann = a.get("annotations", {})
        assert ann.get("summary") and ann.get("description"), name
        sev = a.get("labels", {}).get("severity")
        # picture conditions inherit the engine's severity from vqmon_alert_active
        assert sev in ("info", "warning", "critical") or "vqmon_alert_active" in a["expr"], name
        if "vqmon_alert_active" in a["expr"] or "stream" in json.dumps(a["annotations"]):
            assert "{{ $labels.stream }}" in ann["summary"], name


def test_every_alert_has_firing_and_quiet_unit_tests():
    firing: set[str] = set()
    quiet: set[str] = set()
    for f in PROM_TESTS:
        doc = yaml.safe_load(f.read_text())
        assert doc["rule_files"] == ["../rules/vqmon.rules.yml"], f
        for t in doc["tests"]:
            for case in t.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {a["alert"] for a in _alerts()}
    assert names - firing == set(), f"no firing test for {sorted(names - firing)}"
    assert names - quiet == set(), f"no not-firing test for {sorted(names - quiet)}"


def test_prometheus_config_defaults():
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    job = {j["job_name"]: j for j in cfg["scrape_configs"]}["vqmon"]
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9108"]
    assert job["scrape_interval"] == "5s"
    assert cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9093"]
    for rf in cfg["rule_files"]:
        assert (PROM / rf).is_file()


def test_alertmanager_config_shape():
    cfg = yaml.safe_load(AM_CONFIG.read_text())
    assert cfg["route"]["group_by"] == ["alertname", "stream"]
    inhibit = cfg["inhibit_rules"][0]
    assert inhibit["source_matchers"] == ['alertname="VqmonStreamDown"']
    assert inhibit["equal"] == ["stream"]
    urls = [w["url"] for r in cfg["receivers"] for w in r.get("webhook_configs", [])]
    assert "http://127.0.0.1:9095/alerts" in urls


# -- promtool / amtool ----------------------------------------------------------------------------

@need_promtool
def test_promtool_check_rules():
    p = _run(PROMTOOL, "check", "rules", str(RULES))
    assert p.returncode == 0, p.stdout + p.stderr


@need_promtool
def test_promtool_unit_tests():
    assert PROM_TESTS
    p = _run(PROMTOOL, "test", "rules", *[str(f) for f in PROM_TESTS])
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("SUCCESS") == len(PROM_TESTS), p.stdout


@need_promtool
def test_promtool_check_config():
    p = _run(PROMTOOL, "check", "config", str(PROM / "prometheus.yml"))
    assert p.returncode == 0, p.stdout + p.stderr


@need_promtool
def test_promtool_tests_catch_a_broken_rule(tmp_path):
    """The unit tests are not vacuous: loosening a rule makes them fail."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    shutil.copy(PROM / "tests" / "quality_test.yml", tmp_path / "tests")
    for old, new, alert in (
            ('vqmon_alert_active{condition="quality_low"} == 1',
             'vqmon_alert_active{condition="quality_low"} >= 0', "VqmonQualityLow"),
            (") > 20\n", ") > 5\n", "VqmonQualityDrop")):
        text = RULES.read_text()
        assert old in text, old
        (tmp_path / "rules" / "vqmon.rules.yml").write_text(text.replace(old, new))
        p = _run(PROMTOOL, "test", "rules", str(tmp_path / "tests" / "quality_test.yml"))
        assert p.returncode != 0, alert
        assert alert in p.stdout + p.stderr


@need_amtool
def test_amtool_check_config():
    p = _run(AMTOOL, "check-config", str(AM_CONFIG))
    assert p.returncode == 0, p.stdout + p.stderr


@need_amtool
@pytest.mark.parametrize("labels,receiver", [
    (["severity=critical", "alertname=VqmonStreamDown", "stream=cam1"], "pager"),
    (["severity=critical", "alertname=VqmonFrozen", "stream=cam1", "condition=frozen"], "pager"),
    (["severity=warning", "alertname=VqmonQualityLow", "stream=cam1"], "webhook"),
    (["severity=info", "alertname=VqmonPictureCondition", "stream=cam1"], "null"),
    (["alertname=Unlabelled"], "webhook"),
])
def test_amtool_routes(labels, receiver):
    p = _run(AMTOOL, "config", "routes", "test", f"--config.file={AM_CONFIG}",
             f"--verify.receivers={receiver}", *labels)
    assert p.returncode == 0, p.stdout + p.stderr


# -- webhook example -------------------------------------------------------------------------------

def _load_webhook_example():
    spec = importlib.util.spec_from_file_location("webhook_example", AM / "webhook_example.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _serve_webhook(out: io.StringIO):
    mod = _load_webhook_example()
    srv = mod.make_server("127.0.0.1", 0, out)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    return srv


PAYLOAD = {
    "version": "4", "status": "firing", "receiver": "webhook", "groupKey": "{}:{}",
    "alerts": [
        {"status": "firing", "labels": {"alertname": "VqmonFrozen", "stream": "cam1", "severity": "critical",
                                        "condition": "frozen"},
         "annotations": {"summary": "Frozen picture on stream cam1"}, "startsAt": "2024-05-01T10:00:00Z"},
        {"status": "resolved", "labels": {"alertname": "VqmonQualityLow", "stream": "cam2",
                                          "severity": "warning"},
         "annotations": {"summary": "Low video quality on stream cam2"}, "startsAt": "2024-05-01T09:00:00Z",
         "endsAt": "2024-05-01T09:05:00Z"},
    ],
}


def test_webhook_example_prints_alerts():
    out = io.StringIO()
    srv = _serve_webhook(out)
    try:
        host, port = srv.server_address[:2]
        assert host == "127.0.0.1"
        req = urllib.request.Request(f"http://127.0.0.1:{port}/alerts", data=json.dumps(PAYLOAD).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200
        bad = urllib.request.Request(f"http://127.0.0.1:{port}/alerts", data=b"not json")
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(bad, timeout=5)
        assert ei.value.code == 400
    finally:
        srv.shutdown()
        srv.server_close()
    lines = out.getvalue().splitlines()
    assert lines[0] == ("[alerts] FIRING critical VqmonFrozen stream=cam1 condition=frozen "
                        "since 2024-05-01T10:00:00Z: Frozen picture on stream cam1")
    assert lines[1].startswith("[alerts] RESOLVED warning VqmonQualityLow stream=cam2")


# -- a real Alertmanager: inhibition while the stream is down, delivery to the webhook ---------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _am_get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.loads(r.read())


@need_alertmanager
@pytest.mark.slow
def test_alertmanager_inhibits_quality_alerts_while_stream_down(tmp_path):
    out = io.StringIO()
    srv = _serve_webhook(out)
    hook_port = srv.server_address[1]
    am_port = _free_port()
    cfg = AM_CONFIG.read_text().replace("127.0.0.1:9095", f"127.0.0.1:{hook_port}")
    cfg = re.sub(r"group_wait: \d+s", "group_wait: 1s", cfg)
    (tmp_path / "am.yml").write_text(cfg)
    proc = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=", "--log.level=warn"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while True:
            try:
                _am_get(am_port, "/api/v2/status")
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise AssertionError(proc.stdout.read().decode() if proc.poll() is not None else "timeout")
                time.sleep(0.2)

        def alert(name, stream, severity):
            return {"labels": {"alertname": name, "stream": stream, "severity": severity, "job": "vqmon"},
                    "annotations": {"summary": f"{name} on {stream}"}}

        alerts = [alert("VqmonStreamDown", "cam1", "critical"),
                  alert("VqmonQualityLow", "cam1", "warning"),
                  alert("VqmonFrozen", "cam1", "critical"),
                  alert("VqmonQualityLow", "cam2", "warning")]
        req = urllib.request.Request(f"http://127.0.0.1:{am_port}/api/v2/alerts", data=json.dumps(alerts).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200

        def states():
            got = _am_get(am_port, "/api/v2/alerts")
            return {(a["labels"]["alertname"], a["labels"]["stream"]): a["status"] for a in got}

        deadline = time.time() + 20
        while True:
            st = states()
            if len(st) == 4 and st[("VqmonQualityLow", "cam1")]["state"] == "suppressed":
                break
            assert time.time() < deadline, st
            time.sleep(0.2)
        assert st[("VqmonQualityLow", "cam1")]["inhibitedBy"]
        assert st[("VqmonFrozen", "cam1")]["state"] == "suppressed"
        assert st[("VqmonStreamDown", "cam1")]["state"] == "active"
        assert st[("VqmonQualityLow", "cam2")]["state"] == "active"

        # delivered: the stream-down page and the other stream's warning, nothing for cam1's quality
        deadline = time.time() + 30
        while True:
            text = out.getvalue()
            if "[pager] FIRING critical VqmonStreamDown stream=cam1" in text and \
                    "[alerts] FIRING warning VqmonQualityLow stream=cam2" in text:
                break
            assert time.time() < deadline, text
            time.sleep(0.2)
        time.sleep(1.5)
        text = out.getvalue()
        assert "VqmonQualityLow stream=cam1" not in text
        assert "VqmonFrozen stream=cam1" not in text
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        srv.shutdown()
        srv.server_close()

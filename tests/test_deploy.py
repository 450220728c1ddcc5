"""deploy/: compose stack, Grafana dashboard, Kubernetes manifests, checked offline.

- every ``vqmon_*`` series named in the dashboard and the Prometheus rules is one the monitor
  exports (the live ``monitor.metrics.Metrics().registry``), with a negative control;
- every dashboard query parses (promtool) and returns data from a real Prometheus scraping a
  live, populated registry;
- Kubernetes manifests validate strictly against the pinned API schemas (PyPI
  ``kubernetes-validate``) and agree with each other and with the monitor (CLI arguments,
  configuration, ports, probes, labels, shard environment);
- compose.yaml validates against the compose-spec schema (``check-jsonschema``'s vendored
  copy) and its mounts, ports, targets and configuration agree;
- Prometheus / Alertmanager configurations pass promtool / amtool as the containers see them.

promtool, amtool and prometheus come from Debian (``./dev`` installs them); tests that need
them skip, saying so, where they are missing.
"""
from __future__ import annotations

import copy
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
K8S = DEPLOY / "k8s"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "vqmon.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "vqmon.yaml"
DASH_PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "vqmon.yaml"
RULES = DEPLOY / "prometheus" / "rules" / "vqmon.rules.yml"

# oldest Kubernetes with the apps.kubernetes.io/pod-index label (beta, on by default), and a
# recent one; kubernetes-validate ships the schemas of both
K8S_VERSIONS = ("1.28.0", "1.33.0")
METRICS_PORT = 9108

PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
PROMETHEUS = shutil.which("prometheus")
need_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")
need_amtool = pytest.mark.skipif(
    AMTOOL is None, reason="amtool not installed (apt-get install prometheus-alertmanager)")
need_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (apt-get install prometheus)")


def _run(*cmd, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------------------------------------
# metric names: what vqmon exports vs what the dashboard and rules use
# ------------------------------------------------------------------------------------------------

_SERIES_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                    "summary": ("", "_sum", "_count"), "gauge": ("",), "info": ("_info",),
                    "stateset": ("",), "gaugehistogram": ("_bucket", "_gsum", "_gcount"), "unknown": ("",)}
_METRIC_RE = re.compile(r"(?<![A-Za-z0-9_:])vqmon_[A-Za-z0-9_:]+")


def exported_series() -> set[str]:
    """Series names the monitor's registry exposes (counters as ``_total``, histograms as
    ``_bucket``/``_sum``/``_count``; ``_created`` series are disabled in monitor.metrics)."""
    from monitor.metrics import Metrics
    from monitor.sinks import SINKS, SinkContext
    registry = Metrics().registry
    for sink in SINKS.values():  # a sink's series are made with it (not started here)
        sink(sink.config_class(), SinkContext(streams=[], registry=registry, scrub=str, announce=print))
    names = set()
    for family in registry.collect():
        names.update(family.name + s for s in _SERIES_SUFFIXES[family.type])
    return names


def metric_names(expr: str) -> set[str]:
    return set(_METRIC_RE.findall(expr))


def rule_exprs(doc: dict) -> list[str]:
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def dashboard_exprs(dash: dict) -> list[str]:
    """Every PromQL expression of a dashboard: panel targets and query variables."""
    out = []
    for p in dash["panels"]:
        out += [t["expr"] for t in p.get("targets", []) if t.get("expr")]
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]
            out.append(q["query"] if isinstance(q, dict) else q)
    return out


def unknown_metrics(exprs: list[str], exported: set[str]) -> dict[str, set[str]]:
    bad = {}
    for e in exprs:
        missing = metric_names(e) - exported
        if missing:
            bad[e] = missing
    return bad


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_rules_and_dashboard_use_only_exported_metrics():
    exported = exported_series()
    rules = rule_exprs(yaml.safe_load(RULES.read_text()))
    dash = dashboard_exprs(_dashboard())
    assert rules and dash
    assert unknown_metrics(rules, exported) == {}
    assert unknown_metrics(dash, exported) == {}
    # the dashboard shows what the issue asks for
    used = set().union(*(metric_names(e) for e in dash))
    for name in ("vqmon_quality_score", "vqmon_quality_worst_region_score", "vqmon_alert_active",
                 "vqmon_frames_decoded_total", "vqmon_frames_dropped_total", "vqmon_reconnects_total",
                 "vqmon_inference_latency_seconds_bucket", "vqmon_batch_size_bucket", "vqmon_redis_up",
                 "vqmon_streams_assigned", "vqmon_shard_info"):
        assert name in used, name


def test_metric_check_catches_unknown_names():
    """Negative control: a misspelt name, a counter without ``_total`` and a bare histogram."""
    exported = exported_series()
    assert "vqmon_frames_decoded_total" in exported and "vqmon_batch_size_bucket" in exported
    bad = unknown_metrics(['avg_over_time(vqmon_quality_scroe[1m]) < 40',
                           'rate(vqmon_frames_decoded[5m])',
                           'vqmon_batch_size > 1',
                           'vqmon_stream_up{job="vqmon_like_label_value"} == 0'], exported)
    assert bad == {'avg_over_time(vqmon_quality_scroe[1m]) < 40': {"vqmon_quality_scroe"},
                   'rate(vqmon_frames_decoded[5m])': {"vqmon_frames_decoded"},
                   'vqmon_batch_size > 1': {"vqmon_batch_size"},
                   'vqmon_stream_up{job="vqmon_like_label_value"} == 0': {"vqmon_like_label_value"}}
    # and a dashboard with such a panel is flagged by the same path the real one goes through
    dash = _dashboard()
    broken = copy.deepcopy(dash)
    broken["panels"][-1]["targets"][0]["expr"] = "sum(vqmon_streams_asigned)"
    assert unknown_metrics(dashboard_exprs(broken), exported) == {
        "sum(vqmon_streams_asigned)": {"vqmon_streams_asigned"}}


# ------------------------------------------------------------------------------------------------
# Grafana
# ------------------------------------------------------------------------------------------------

def test_dashboard_structure_and_datasource():
    dash = _dashboard()
    [ds] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    # panels use the data source variable; its default is the provisioned data source
    dsvar = variables["datasource"]
    assert dsvar["type"] == "datasource" and dsvar["query"] == ds["type"] == "prometheus"
    assert dsvar["current"]["value"] == ds["uid"]
    ref = {"type": "prometheus", "uid": "${datasource}"}
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == ref, v["name"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: set[tuple[int, int]] = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & occupied, f"panel {p['title']!r} overlaps another"
        occupied |= cells
        if p["type"] == "row":
            continue
        assert p["datasource"] == ref, p["title"]
        assert p["targets"], p["title"]
        refids = [t["refId"] for t in p["targets"]]
        assert len(refids) == len(set(refids)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == ref and t["expr"].strip(), p["title"]
    # Grafana variables used in expressions are defined (or built in)
    for e in dashboard_exprs(dash):
        for var in re.findall(r"\$\{?(\w+)", e):
            assert var in variables or var.startswith("__"), (var, e)


def test_dashboard_provisioning_matches_compose_mounts():
    compose = yaml.safe_load(COMPOSE.read_text())
    grafana = compose["services"]["grafana"]
    mounts = _bind_mounts(grafana)
    [provider] = yaml.safe_load(DASH_PROVIDERS.read_text())["providers"]
    host_dir = _host_path(mounts, provider["options"]["path"])
    assert host_dir is not None and (host_dir / DASHBOARD.name).is_file()
    assert _host_path(mounts, "/etc/grafana/provisioning/datasources") == DATASOURCES.parent
    assert _host_path(mounts, "/etc/grafana/provisioning/dashboards") == DASH_PROVIDERS.parent
    [ds] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    url = urllib.parse.urlsplit(ds["url"])
    assert url.hostname == "prometheus" and url.port == _container_port(compose["services"]["prometheus"], 9090)
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert _host_path(mounts, home) == DASHBOARD


def _grafana_to_promql(expr: str) -> str:
    """Grafana variables -> what they expand to with "All" selected."""
    expr = expr.replace("$__rate_interval", "1m")
    return re.sub(r"\$\{?(instance|stream)\}?", ".*", expr)


@need_promtool
def test_dashboard_queries_parse(tmp_path):
    """promtool parses each expression (as a recording rule); a broken one is caught."""
    exprs = [_grafana_to_promql(e) for e in dashboard_exprs(_dashboard()) if not e.startswith("label_values(")]

    def check(exprs: list[str]) -> subprocess.CompletedProcess:
        rules = {"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
        f = tmp_path / "dash.rules.yml"
        f.write_text(yaml.safe_dump(rules))
        return _run(PROMTOOL, "check", "rules", f)

    p = check(exprs)
    assert p.returncode == 0, p.stdout + p.stderr
    p = check(exprs + ["sum by (le (rate(vqmon_batch_size_bucket[1m]))"])
    assert p.returncode != 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _populated_metrics():
    """A registry with every family set, as a running sharded monitor would have it."""
    from monitor.metrics import Metrics
    m = Metrics()
    m.init_stream("cam1")
    m.quality_score.labels("cam1").set(63.2)
    m.worst_region.labels("cam1").set(41.0)
    m.stream_up.labels("cam1").set(1)
    m.last_frame.labels("cam1").set(time.time())
    m.decoded.labels("cam1").inc(250)
    m.scored.labels("cam1").inc(20)
    m.dropped.labels("cam1", "scorer_behind").inc(2)
    m.reconnects.labels("cam1").inc(1)
    m.inference_latency.observe(0.012)
    m.batch_size.observe(4)
    m.build_info.labels("0.1.0", "bifusion", "cpu").set(1)
    m.set_detectors("cam1", {"blur": 0.3})
    m.set_alert("cam1", "frozen", "warning", True)
    from monitor.sinks.redis_writer import RedisMetrics
    redis = RedisMetrics(m.registry)  # each sink's series: in its own module
    redis.up.set(1)
    redis.buffered.set(0)
    redis.written.inc(20)
    redis.lost.inc(0)
    redis.decode_to_redis.observe(0.25)
    m.shard_info.labels("0", "1").set(1)
    m.streams_configured.set(1)
    m.streams_assigned.set(1)
    return m


def _prom_query(port: int, expr: str) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:  # 400 bad_data: the expression did not parse / type-check
        return json.loads(e.read())


@need_prometheus
def test_dashboard_queries_return_data_from_a_real_prometheus(tmp_path):
    """Every panel query, run by Prometheus against a live vqmon registry, returns series: label
    names in ``by``/``on`` clauses and selectors match what vqmon exports."""
    from prometheus_client import start_http_server
    m = _populated_metrics()
    server, _ = start_http_server(0, addr="127.0.0.1", registry=m.registry)
    host, mport = "127.0.0.1", server.server_port
    pport = _free_port()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "vqmon", "static_configs": [{"targets": [f"{host}:{mport}"]}]}]}))
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{pport}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:  # rate() needs two scrapes of a counter
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                r = _prom_query(pport, "count_over_time(vqmon_redis_up[1m])")
                if r.get("data", {}).get("result") and float(r["data"]["result"][0]["value"][1]) >= 3:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "prometheus did not scrape vqmon within 60 s"
            time.sleep(0.3)
        empty, failed = [], []
        for e in dashboard_exprs(_dashboard()):
            if e.startswith("label_values("):  # a Grafana function: check its selector instead
                e = re.match(r"label_values\((.*),\s*\w+\)$", e).group(1)
            r = _prom_query(pport, _grafana_to_promql(e))
            if r.get("status") != "success":
                failed.append((e, r.get("error")))
            elif not r["data"]["result"] and "ALERTS" not in e:  # no rule loaded here
                empty.append(e)
        assert failed == []
        assert empty == []
        # negative control: joining on a label only one side has (a typical dashboard mistake)
        # returns nothing, which the check above would report
        r = _prom_query(pport, "vqmon_streams_assigned * on (shard) vqmon_shard_info")
        assert r["status"] == "success" and r["data"]["result"] == []
    finally:
        proc.terminate()
        proc.wait(15)
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------------------------
# compose
# ------------------------------------------------------------------------------------------------

def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _bind_mounts(service: dict) -> dict[str, Path]:
    """container path -> host path of a service's bind mounts (short syntax)."""
    out = {}
    for v in service.get("volumes", []):
        src, target = v.split(":")[:2]
        if src.startswith((".", "/")):
            out[target] = (COMPOSE_DIR / src).resolve()
    return out


def _host_path(mounts: dict[str, Path], container_path: str) -> Path | None:
    for target, src in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return (src / Path(container_path).relative_to(target)).resolve()
    return None


def _container_port(service: dict, default: int) -> int:
    ports = [int(p.rsplit(":", 1)[1]) for p in service.get("ports", [])]
    return ports[0] if ports else default


def _vqmon_services(compose: dict) -> dict[str, dict]:
    return {n: s for n, s in compose["services"].items() if n.startswith("vqmon-")}


def _compose_env() -> dict[str, str]:
    """Placeholder values for every variable of env.example (what a user's .env sets)."""
    env = {}
    for line in (COMPOSE_DIR / "env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            env[k.strip()] = v.strip()
    return env


def test_compose_matches_the_compose_spec_schema(tmp_path):
    pytest.importorskip("check_jsonschema", reason="pip install check-jsonschema (test extra)")

    def check(path: Path) -> subprocess.CompletedProcess:
        return _run(sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", path)

    p = check(COMPOSE)
    assert p.returncode == 0, p.stdout + p.stderr
    # negative control: a misspelt service key is rejected
    bad = tmp_path / "compose.yaml"
    bad.write_text(COMPOSE.read_text().replace("    healthcheck:\n      test: [\"CMD-SHELL\"",
                                               "    healthchek:\n      test: [\"CMD-SHELL\"", 1))
    assert bad.read_text() != COMPOSE.read_text()
    assert check(bad).returncode != 0


def test_compose_files_ports_and_profiles():
    compose = _compose()
    services = compose["services"]
    assert {"redis", "prometheus", "alertmanager", "grafana"} <= services.keys()
    vq = _vqmon_services(compose)
    # CPU and GPU variants, each behind its own profile so that exactly one runs
    assert {n: s["profiles"] for n, s in vq.items()} == {"vqmon-cpu": ["cpu"], "vqmon-gpu": ["gpu"]}
    assert services["vqmon-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    for name, s in services.items():
        for target, src in _bind_mounts(s).items():
            assert src.exists(), f"{name}: {src} (mounted at {target}) does not exist"
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if not src.startswith((".", "/")):
                assert src in compose["volumes"], f"{name}: named volume {src} is not declared"
        for p in s.get("ports", []):
            assert p.startswith("127.0.0.1:"), f"{name}: port {p} must be published on loopback only"
        if "build" in s:
            assert (COMPOSE_DIR / s["build"]["context"] / s["build"]["dockerfile"]).is_file(), name
        for dep in s.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown service {dep}"
    # every ${VAR} of compose.yaml is in env.example, with a placeholder value
    env = _compose_env()
    for var in set(re.findall(r"\$\{(\w+)", COMPOSE.read_text())):
        assert var in env, f"{var} is used in compose.yaml but not in env.example"
    assert all(v.startswith("change-me") for v in env.values()), "env.example must hold placeholders only"


def test_compose_vqmon_command_and_config():
    from monitor.cli import build_parser
    from monitor.config import load_config
    compose = _compose()
    env = _compose_env()
    for name, s in _vqmon_services(compose).items():
        args = build_parser().parse_args(s["command"])
        assert args.command == "run" and args.config == "/etc/vqmon/vqmon.yaml", name
        config_file = _host_path(_bind_mounts(s), args.config)
        assert config_file == COMPOSE_DIR / "vqmon.yaml", name
        # the variables the config needs are passed to the container
        needed = set(re.findall(r"\$\{(\w+)", config_file.read_text()))
        assert needed <= s["environment"].keys(), name
        cfg = load_config(config_file, env={k: env[k] for k in s["environment"]})
        host, port = cfg.metrics.address
        assert host == "0.0.0.0" and port == _container_port(s, METRICS_PORT) == METRICS_PORT, name
        assert "vqmon" in s["networks"]["default"]["aliases"], name
        assert "/healthz" in " ".join(s["healthcheck"]["test"]), name
        redis_url = urllib.parse.urlsplit(cfg.redis.url)
        assert redis_url.hostname == "redis" and redis_url.port == 6379, name
        # the sample clips it monitors are in the image (COPY monitor monitor, WORKDIR /opt/vqmon)
        for st in cfg.active_streams:
            assert st.path.startswith("/opt/vqmon/"), st.name
            assert (ROOT / Path(st.path).relative_to("/opt/vqmon")).is_file(), st.name


def _stage(service: dict, tmp_path: Path, config_path: str) -> Path:
    """Copy a service's bind mounts into tmp_path as the container sees them; the staged config."""
    for target, src in _bind_mounts(service).items():
        dst = tmp_path / target.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    return tmp_path / config_path.lstrip("/")


@need_promtool
def test_compose_prometheus_config(tmp_path):
    compose = _compose()
    prom = compose["services"]["prometheus"]
    [flag] = [a for a in prom["command"] if a.startswith("--config.file=")]
    staged = _stage(prom, tmp_path, flag.split("=", 1)[1])
    p = _run(PROMTOOL, "check", "config", staged)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS: 1 rule files found" in p.stdout + p.stderr  # the rules are loaded, not just listed
    cfg = yaml.safe_load(staged.read_text())
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in cfg["scrape_configs"]}
    # VqmonDown selects up{job="vqmon"}; the target is the alias both vqmon variants carry
    assert 'up{job="vqmon"}' in RULES.read_text()
    assert targets["vqmon"] == [f"vqmon:{METRICS_PORT}"]
    am = cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am == [f"alertmanager:{_container_port(compose['services']['alertmanager'], 9093)}"]


@need_amtool
def test_compose_alertmanager_config(tmp_path):
    am = _compose()["services"]["alertmanager"]
    [flag] = [a for a in am["command"] if a.startswith("--config.file=")]
    staged = _stage(am, tmp_path, flag.split("=", 1)[1])
    p = _run(AMTOOL, "check-config", staged)
    assert p.returncode == 0, p.stdout + p.stderr
    # the example receiver shares Alertmanager's network namespace: the config's
    # http://127.0.0.1:9095 webhooks reach it
    hook = _compose()["services"]["alert-webhook"]
    assert hook["network_mode"] == "service:alertmanager"
    assert "127.0.0.1:9095" in staged.read_text()


# ------------------------------------------------------------------------------------------------
# Dockerfiles
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_dockerfiles_fit_compose_and_k8s(name):
    text = (DEPLOY / "docker" / name).read_text()
    assert 'ENTRYPOINT ["vqmon"]' in text
    assert re.search(rf"^EXPOSE {METRICS_PORT}$", text, re.M)
    assert re.search(r"^USER 10001:10001$", text, re.M), "numeric user: runAsNonRoot can verify it"
    assert "VQMON_CACHE_DIR=/var/lib/vqmon/cache" in text
    assert "install -d -o 10001 -g 10001 /var/lib/vqmon/cache" in text
    assert "COPY monitor monitor" in text and "WORKDIR /opt/vqmon" in text
    pod = _k8s_by_kind()["StatefulSet"]["vqmon"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001


# ------------------------------------------------------------------------------------------------
# Kubernetes
# ------------------------------------------------------------------------------------------------

def _k8s_files() -> list[Path]:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [K8S / r for r in kust["resources"]]


def _k8s_docs(files: list[Path] | None = None) -> list[dict]:
    docs = []
    for f in files or _k8s_files():
        docs += [d for d in yaml.safe_load_all(f.read_text()) if d]
    return docs


def _k8s_by_kind() -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for d in _k8s_docs():
        out.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    return out


def test_kustomization_lists_every_manifest():
    listed = {p.name for p in _k8s_files()}
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    for d in _k8s_docs():
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == "vqmon", d["metadata"]["name"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_validate_strictly(version):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (test extra)")
    docs = _k8s_docs()
    assert len(docs) >= 10
    for d in docs:
        kv.validate(d, version, strict=True)


def test_k8s_validation_catches_mistakes():
    """Negative control: a misspelt field and a wrong type are rejected."""
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (test extra)")
    sts = _k8s_by_kind()["StatefulSet"]["vqmon"]
    typo = copy.deepcopy(sts)
    c = typo["spec"]["template"]["spec"]["containers"][0]
    c["resources"]["request"] = c["resources"].pop("requests")
    wrong_type = copy.deepcopy(sts)
    wrong_type["spec"]["replicas"] = "three"
    for bad in (typo, wrong_type):
        with pytest.raises(kv.ValidationError):
            kv.validate(bad, K8S_VERSIONS[0], strict=True)


def _worker() -> tuple[dict, dict]:
    sts = _k8s_by_kind()["StatefulSet"]["vqmon"]
    [c] = sts["spec"]["template"]["spec"]["containers"]
    return sts, c


def _k8s_config_env() -> dict[str, str]:
    secret = _k8s_by_kind()["Secret"]["vqmon-credentials"]
    return dict(secret["stringData"])


def test_k8s_worker_matches_the_monitor():
    from monitor.cli import build_parser
    from monitor.config import parse_config
    kinds = _k8s_by_kind()
    sts, c = _worker()
    pod = sts["spec"]["template"]["spec"]
    args = build_parser().parse_args(c["args"])
    assert args.command == "run" and args.shard == "auto"
    # the config file is the ConfigMap's key, mounted where --config points
    [mount] = [m for m in c["volumeMounts"] if m["name"] == "config"]
    [vol] = [v for v in pod["volumes"] if v["name"] == "config"]
    cm = kinds["ConfigMap"][vol["configMap"]["name"]]
    assert str(Path(mount["mountPath"]) / "vqmon.yaml") == args.config
    text = cm["data"]["vqmon.yaml"]
    # every ${VAR} of the config is a key of the Secret the container gets as environment
    secret_name = c["envFrom"][0]["secretRef"]["name"]
    assert set(re.findall(r"\$\{(\w+)", text)) <= kinds["Secret"][secret_name]["stringData"].keys()
    cfg = parse_config(text, env=_k8s_config_env())
    host, port = cfg.metrics.address
    assert host == "0.0.0.0"
    [cport] = c["ports"]
    assert cport["containerPort"] == port == METRICS_PORT
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert c[probe]["httpGet"] == {"path": path, "port": cport["name"]}, probe
    ann = sts["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/port"] == str(port) and ann["prometheus.io/path"] == "/metrics"
    # one GPU per worker, requested and limited (extended resources need both equal)
    assert c["resources"]["requests"]["nvidia.com/gpu"] == c["resources"]["limits"]["nvidia.com/gpu"] == 1
    # Redis: the configured URL is the in-cluster Service
    url = urllib.parse.urlsplit(cfg.redis.url)
    svc = kinds["Service"][url.hostname]
    assert url.port in [p["port"] for p in svc["spec"]["ports"]]
    # hardening
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/tmp", "/var/lib/vqmon/cache"} <= mounts, "writable paths under a read-only root"


def test_k8s_shards_cover_every_stream_once():
    """The pods' environment (replicas, shard count, pod index) with --shard auto splits the
    ConfigMap's streams into disjoint shares that cover them all."""
    from monitor.config import parse_config
    sts, c = _worker()
    env = {e["name"]: e for e in c["env"]}
    replicas = sts["spec"]["replicas"]
    assert env["VQMON_SHARD_COUNT"]["value"] == str(replicas)
    assert env["VQMON_SHARD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['apps.kubernetes.io/pod-index']"
    cm = _k8s_by_kind()["ConfigMap"]["vqmon-config"]["data"]["vqmon.yaml"]
    text = cm + "\nshard: auto\n"
    owners: dict[str, list[int]] = {}
    for i in range(replicas):
        pod_env = dict(_k8s_config_env(), VQMON_SHARD_COUNT=str(replicas), VQMON_SHARD_INDEX=str(i),
                       HOSTNAME=f"{sts['metadata']['name']}-{i}")
        cfg = parse_config(text, env=pod_env)
        for s in cfg.assigned_streams:
            owners.setdefault(s.name, []).append(i)
    all_streams = {s.name for s in parse_config(cm, env=_k8s_config_env()).active_streams}
    assert owners.keys() == all_streams
    assert all(len(o) == 1 for o in owners.values()), owners
    # without the label (Kubernetes < 1.28) the HOSTNAME ordinal gives the same index
    cfg = parse_config(text, env=dict(_k8s_config_env(), VQMON_SHARD_COUNT=str(replicas), VQMON_SHARD_INDEX="",
                                      HOSTNAME=f"{sts['metadata']['name']}-1"))
    assert cfg.shard == f"1/{replicas}"


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_k8s_selectors_and_services():
    kinds = _k8s_by_kind()
    sts, c = _worker()
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert _selects(sts["spec"]["selector"]["matchLabels"], pod_labels)
    headless = kinds["Service"][sts["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    metrics = kinds["Service"]["vqmon"]  # the job name the rules' VqmonDown selects (ServiceMonitor)
    for svc in (headless, metrics):
        assert _selects(svc["spec"]["selector"], pod_labels)
        assert svc["spec"]["publishNotReadyAddresses"] is True
        assert [p["targetPort"] for p in svc["spec"]["ports"]] == [c["ports"][0]["name"]]
    pdb = kinds["PodDisruptionBudget"]["vqmon"]
    assert _selects(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    assert pdb["spec"]["maxUnavailable"] == 1
    # Redis: Service -> pods, NetworkPolicy admits the workers
    redis = kinds["StatefulSet"]["vqmon-redis"]
    redis_labels = redis["spec"]["template"]["metadata"]["labels"]
    assert _selects(kinds["Service"]["vqmon-redis"]["spec"]["selector"], redis_labels)
    np = kinds["NetworkPolicy"]["vqmon-redis"]
    assert _selects(np["spec"]["podSelector"]["matchLabels"], redis_labels)
    assert _selects(np["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"], pod_labels)
    # the Secret key the Redis container reads exists
    for e in redis["spec"]["template"]["spec"]["containers"][0]["env"]:
        ref = e["valueFrom"]["secretKeyRef"]
        assert ref["key"] in kinds["Secret"][ref["name"]]["stringData"]


def test_k8s_optional_servicemonitor_selects_the_metrics_service():
    [sm] = _k8s_docs([K8S / "optional" / "servicemonitor.yaml"])
    assert sm["apiVersion"] == "monitoring.coreos.com/v1" and sm["kind"] == "ServiceMonitor"
    svc = _k8s_by_kind()["Service"]["vqmon"]
    assert _selects(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [svc["metadata"]["namespace"]]
    assert [e["port"] for e in sm["spec"]["endpoints"]] == [p["name"] for p in svc["spec"]["ports"]]


@need_promtool
def test_k8s_optional_prometheus_scrape_config(tmp_path):
    """promtool checks the annotation-scraping config with the rules beside it. Debian's promtool
    is built without Kubernetes discovery, so the discovery block is swapped for a static target;
    relabeling and rule files are checked as written."""
    src = K8S / "optional" / "prometheus-scrape.yml"
    cfg = yaml.safe_load(src.read_text())
    [job] = cfg["scrape_configs"]
    assert job["job_name"] == "vqmon"
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["vqmon"]}}]
    ann = _k8s_by_kind()["StatefulSet"]["vqmon"]["spec"]["template"]["metadata"]["annotations"]
    for key in ann:  # the relabeling reads exactly the annotations the pods carry
        meta = "__meta_kubernetes_pod_annotation_" + re.sub(r"[^A-Za-z0-9_]", "_", key)
        assert any(meta in r["source_labels"] for r in job["relabel_configs"]), key
    job["static_configs"] = [{"targets": ["127.0.0.1:9108"]}]
    del job["kubernetes_sd_configs"]
    (tmp_path / "rules").mkdir()
    shutil.copy(RULES, tmp_path / "rules" / RULES.name)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    p = _run(PROMTOOL, "check", "config", tmp_path / "prometheus.yml")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS: 1 rule files found" in p.stdout + p.stderr

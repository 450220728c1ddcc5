"""Sharding: stable disjoint shares of the streams, and three real `vqmon run --shard i/3`
processes over nine file streams writing to one real redis-server."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import urllib.request

import pytest

from conftest import ROOT, vqmon_command, wait_for
from monitor.config import ConfigError, config_from_dict
from monitor.redis_server import EmbeddedRedis, free_port
from monitor.sharding import Shard, owner, parse_shard, resolve_auto

NAMES = [f"cam-{i:04d}" for i in range(3000)]


def test_shares_are_disjoint_cover_everything_and_are_balanced():
    shards = [Shard(i, 5) for i in range(5)]
    shares = [set(s.select(NAMES)) for s in shards]
    assert set().union(*shares) == set(NAMES)
    assert sum(len(s) for s in shares) == len(NAMES)      # disjoint
    for share in shares:                                  # 600 expected each; binomial sd ~22
        assert 480 < len(share) < 720, [len(s) for s in shares]


def test_growing_the_fleet_moves_only_the_new_shards_share():
    before = {n: owner(n, 3) for n in NAMES}
    after = {n: owner(n, 4) for n in NAMES}
    moved = [n for n in NAMES if before[n] != after[n]]
    # rendezvous hashing: a name moves only to the new shard, ~1/4 of them (hash % N moves ~3/4)
    assert all(after[n] == 3 for n in moved)
    assert 0.18 < len(moved) / len(NAMES) < 0.32
    assert owner("cam-0001", 3) == owner("cam-0001", 3)   # no per-process salt (PYTHONHASHSEED)


def test_parse_and_auto():
    assert parse_shard("2/3") == Shard(2, 3) and str(Shard(2, 3)) == "2/3"
    for bad, why in (("3/3", "below the count"), ("1/0", "between 1"), ("x", "INDEX/COUNT"), ("-1/3", "INDEX/COUNT")):
        with pytest.raises(ValueError, match=why):
            parse_shard(bad)
    assert resolve_auto({"VQMON_SHARD_COUNT": "4", "HOSTNAME": "vqmon-worker-3"}) == "3/4"
    assert resolve_auto({"VQMON_SHARD_COUNT": "4", "VQMON_SHARD_INDEX": "1", "HOSTNAME": "vqmon-3"}) == "1/4"
    with pytest.raises(ValueError, match="VQMON_SHARD_COUNT"):
        resolve_auto({"HOSTNAME": "vqmon-0"})
    with pytest.raises(ValueError, match="HOSTNAME"):
        resolve_auto({"VQMON_SHARD_COUNT": "2", "HOSTNAME": "laptop"})


def test_shard_config_resolves_assigns_and_names_the_field_in_errors():
    streams = [{"name": n, "url": f"/x/{n}.mp4"} for n in ("a", "b", "c", "d")]
    cfg = config_from_dict({"streams": streams, "shard": "auto"}, env={"VQMON_SHARD_COUNT": "2", "HOSTNAME": "v-1"})
    assert cfg.shard == "1/2"
    assert [s.name for s in cfg.assigned_streams] == [n for n in "abcd" if owner(n, 2) == 1]
    assert "shard 1/2" in cfg.summary() and "other shard" in cfg.summary()
    with pytest.raises(ConfigError, match=r"shard: .*below the count"):
        config_from_dict({"streams": streams, "shard": "2/2"}, env={})
    with pytest.raises(ConfigError, match=r"shard: 'auto' needs VQMON_SHARD_COUNT"):
        config_from_dict({"streams": streams, "shard": "auto"}, env={})
    # disabled streams are nobody's
    streams[0]["enabled"] = False
    both = [config_from_dict({"streams": streams, "shard": f"{i}/2"}, env={}) for i in range(2)]
    assert sorted(s.name for c in both for s in c.assigned_streams) == ["b", "c", "d"]


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def _scored_streams(text: str) -> dict[str, float]:
    out = {}
    for m in re.finditer(r'^vqmon_frames_scored_total\{stream="([^"]+)"\} (\S+)$', text, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


def _gauge(text: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, f"{name} not exported"
    return float(m.group(1))


def test_three_shards_over_nine_streams_score_each_stream_exactly_once(tmp_path):
    names = [f"feed-{i}" for i in range(9)]
    owners = {n: owner(n, 3) for n in names}
    assert len(set(owners.values())) == 3, "test setup: every shard should own a stream"
    clip = ROOT / "monitor" / "samples" / "bigbuckbunny.mp4"
    redis = EmbeddedRedis().start()
    procs, ports, logs = [], [], []
    try:
        cfg = tmp_path / "vqmon.yaml"
        cfg.write_text("defaults: {sample_rate: 1, loop: true, detectors: {enabled: false}}\n"
                       "streams:\n" + "".join(f"  - {{name: {n}, url: '{clip}'}}\n" for n in names) +
                       f"engine: {{backend: cpu, max_batch: 4}}\nredis: {{url: '{redis.url}'}}\nconsole: false\n")
        for i in range(3):
            port = free_port()
            log = open(tmp_path / f"shard{i}.log", "wb")
            procs.append(subprocess.Popen(
                vqmon_command() + ["run", "-c", str(cfg), "--shard", f"{i}/3", "--metrics", f"127.0.0.1:{port}"],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(ROOT))))
            ports.append(port)
            logs.append(log)
        client = redis.client()

        def all_streams_have_records():
            for p in procs:
                assert p.poll() is None, f"a shard exited early: {p.returncode}"
            return all(client.xlen(f"vqmon:{n}:records") >= 2 for n in names)

        wait_for(all_streams_have_records, timeout=240, interval=1.0, message="records for all nine streams")
        texts = [_scrape(p) for p in ports]
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in logs:
            log.close()

    scored_by = [_scored_streams(t) for t in texts]
    for i, (text, scored) in enumerate(zip(texts, scored_by)):
        mine = sorted(n for n in names if owners[n] == i)
        assert sorted(scored) == mine, f"shard {i} exports series for {sorted(scored)}, owns {mine}"
        assert all(v > 0 for v in scored.values()), f"shard {i} scored nothing for some of {scored}"
        assert f'vqmon_shard_info{{shard="{i}",shards="3"}} 1.0' in text
        assert _gauge(text, "vqmon_streams_assigned") == len(mine)
        assert _gauge(text, "vqmon_streams_configured") == 9
    assert sorted(n for s in scored_by for n in s) == sorted(names)   # each stream in exactly one process
    try:
        for n in names:
            entries = client.xrange(f"vqmon:{n}:records")
            seqs = [e[1][b"seq"] for e in entries]
            # a second writer of the same stream would repeat the running sample numbers
            assert len(seqs) == len(set(seqs)) >= 2, (n, seqs)
        assert {m.decode() for m in client.smembers("vqmon:streams")} == set(names)
    finally:
        redis.stop()
    for p in procs:
        assert p.returncode == 0, (tmp_path / "shard0.log").read_text(errors="replace")[-2000:]

"""Split one stream list over N monitor processes: ``--shard i/N`` or ``--shard auto``.

Each process reads the same configuration and keeps the streams it owns. Ownership is by
rendezvous (highest-random-weight) hashing of the stream name: every process computes the
same owner for a name without talking to the others, the shares are disjoint and cover all
streams, and when N changes only about 1/N of the streams move (``hash % N`` would move
most of them, restarting their decoders and baselines).

``auto`` is for a Kubernetes StatefulSet: the index comes from ``VQMON_SHARD_INDEX`` (set it
from the pod label ``apps.kubernetes.io/pod-index`` with the downward API), else from the
ordinal at the end of ``HOSTNAME`` (``vqmon-2`` -> 2); the count from ``VQMON_SHARD_COUNT``.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

_SPEC_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_ORDINAL_RE = re.compile(r"-(\d+)$")
MAX_SHARDS = 10_000


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, stream: str) -> bool:
        return owner(stream, self.count) == self.index

    def select(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if self.owns(n)]


def _weight(stream: str, shard: int) -> int:
    digest = hashlib.blake2b(f"{shard}\0{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(stream: str, count: int) -> int:
    """The shard (0..count-1) that monitors ``stream``."""
    return max(range(count), key=lambda shard: _weight(stream, shard))


def parse_shard(spec: str) -> Shard:
    """``"i/N"`` -> Shard; raises ValueError with the reason."""
    m = _SPEC_RE.match(spec)
    if not m:
        raise ValueError("expected INDEX/COUNT (e.g. 0/3, indexes from 0) or 'auto'")
    index, count = int(m.group(1)), int(m.group(2))
    if not 1 <= count <= MAX_SHARDS:
        raise ValueError(f"the shard count must be between 1 and {MAX_SHARDS}")
    if index >= count:
        raise ValueError(f"the shard index must be below the count (0..{count - 1})")
    return Shard(index, count)


def resolve_auto(env: Mapping[str, str]) -> str:
    """``auto`` -> ``"i/N"`` from the environment; raises ValueError naming what is missing."""
    count = env.get("VQMON_SHARD_COUNT", "").strip()
    if not count:
        raise ValueError("'auto' needs VQMON_SHARD_COUNT (the StatefulSet's replicas) in the environment")
    index = env.get("VQMON_SHARD_INDEX", "").strip()
    if not index:
        m = _ORDINAL_RE.search(env.get("HOSTNAME", "").strip())
        if not m:
            raise ValueError("'auto' needs VQMON_SHARD_INDEX, or a HOSTNAME ending in -<ordinal> "
                             "(a StatefulSet pod name)")
        index = m.group(1)
    return f"{index}/{count}"

"""The enabled sinks (``monitor.sinks``), fed as one: each scored frame, each stream's state and
each event goes to every sink. Texts are scrubbed of secrets here, once for all sinks."""
from __future__ import annotations

import time
from typing import Any

from .sinks import SINKS, Sink, SinkContext, SinkStatus
from .stream_state import StreamState


class Publisher:
    def __init__(self, sinks: list[Sink], scrub, shard: str | None = None):
        self.sinks = sinks
        self.scrub = scrub
        self.shard = shard  # as configured ("i/N"), written into each state

    @classmethod
    def from_config(cls, config, context: SinkContext) -> Publisher:
        sinks = [SINKS[name](section, context) for name, section in config.sink_configs().items() if section.enabled]
        return cls(sinks, context.scrub, config.shard)

    def start(self, streams: dict[str, StreamState]) -> None:
        for sink in self.sinks:
            sink.start()
        for st in streams.values():
            self.state(st, up=False)

    def stop(self) -> None:
        for sink in self.sinks:
            sink.stop()

    def statuses(self) -> dict[str, SinkStatus]:
        return {sink.name: sink.status() for sink in self.sinks}

    def scored(self, st: StreamState, scored, worst_cell: tuple[int, int]) -> None:
        for sink in self.sinks:
            sink.put_scored(scored, st.smoothed)
        f, rm = scored.frame, scored.region_map
        row, col = worst_cell
        self.state(st, up=st.state == "up", ts=f.ts, pts=f.pts, score=scored.score, score_smoothed=st.smoothed,
                   worst=st.worst, worst_box=rm.cell_box(row, col), frame_size=(f.width, f.height))

    def state(self, st: StreamState, **fields: Any) -> None:
        """The stream's counters and ``fields`` (``up``, the last score...) to every sink."""
        if not self.sinks:
            return
        state = {"stream": st.name, "state": st.state, "error": st.error or "", "url": st.cfg.redacted_url,
                 "model": st.cfg.model, "sample_rate": st.cfg.sample_rate, "scored": st.scored,
                 "dropped": st.dropped, "reconnects": st.reconnects, "fps": st.fps, "decoded": st.decoded,
                 "shard": self.shard, "updated": time.time(), **fields}
        for sink in self.sinks:
            sink.set_state(st.name, state)

    def event(self, event: dict[str, Any]) -> None:
        clean = {k: self.scrub(v) if isinstance(v, str) else v for k, v in event.items() if v is not None}
        for sink in self.sinks:
            sink.put_event(clean)

"""Which frames a stream's worker decodes: the per-stream ``decode`` setting.

A monitor that samples one frame every 2 s from a 25 fps stream uses 1 decoded frame in 50.
Key frames decode on their own, so decoding only them (FFmpeg's ``skip_frame = NONKEY``: the
demuxer still reads every packet, the decoder skips all but key frames) costs a small part of
a full decode, and the samples then fall on key frames: the sampling follows the GOP.

- ``all``: every frame (every detector sees every frame).
- ``keyframes``: key frames only, from the first packet.
- ``auto``: all frames while it measures the key-frame interval (two intervals), then key
  frames when the sample interval is at least that interval.

``keyframes`` and ``auto`` both go back to all frames, saying why, while the key-frame interval
is longer than the sample interval (or no key frame came for longer than it): sampling would
otherwise slow down to the GOP. They return to key frames once the interval fits again. The
interval is the longest of the last three, so one early key frame (a scene cut) does not
count as a short GOP.
"""
from __future__ import annotations

from collections import deque

MODES = ("all", "keyframes", "auto")

# What the detectors cannot see while only key frames are decoded (docs/performance.md,
# ``check-config``'s summary and the stream's state say the same).
KEYFRAME_LIMITS = (
    "decode errors in frames between key frames",
    "freezes and black shorter than the key-frame interval",
    "damage in frames between key frames",
)
# Seen from every packet in either mode: stalls, frame rate, timestamp jumps.


class DecodeMode:
    """Decides, packet by packet, whether a stream's decoder takes key frames only."""

    def __init__(self, setting: str, sample_interval: float, frame_step: float = 0.04):
        if setting not in MODES:
            raise ValueError(f"decode must be one of {', '.join(MODES)}, not {setting!r}")
        self.setting = setting
        self.sample_interval = float(sample_interval)
        # timestamps are rounded to frames: a GOP of exactly the sample interval must fit
        self.tolerance = 1.5 * frame_step
        self.keyframes_only = setting == "keyframes"
        if setting == "all":
            self.reason = "decode: all"
        elif setting == "keyframes":
            self.reason = "decode: keyframes"
        else:
            self.reason = "measuring the key-frame interval"
        self.key_interval: float | None = None
        self._decided = False  # the first decision is reported even when it changes nothing
        self._first: float | None = None  # the first packet's time
        self._keys: deque[float] = deque(maxlen=4)

    def restart(self) -> None:
        """A reconnect: its timestamps start anywhere; the decision in force stays."""
        self._first = None
        self._keys.clear()

    def on_packet(self, t: float | None, is_key: bool) -> str | None:
        """Note one video packet (``t``: its time in seconds); a reason when the mode changed."""
        if self.setting == "all" or t is None:
            return None
        if self._first is None:
            self._first = t
        if is_key:
            if self._keys and t <= self._keys[-1]:  # a loop or a clock reset: measure again
                self._keys.clear()
            self._keys.append(t)
            if len(self._keys) >= 3:
                steps = [b - a for a, b in zip(self._keys, list(self._keys)[1:])]
                self.key_interval = max(steps)
            return self._decide(self.key_interval)
        since = self._keys[-1] if self._keys else self._first
        if (self.keyframes_only or not self._decided) and t - since > self.sample_interval + self.tolerance:
            # e.g. a camera with periodic intra refresh instead of key frames
            return self._set(False, f"no key frame for {t - since:.1f} s, longer than the "
                                    f"sample interval {self.sample_interval:g} s: all frames")
        return None

    def _decide(self, interval: float | None) -> str | None:
        if interval is None:
            return None
        if interval <= self.sample_interval + self.tolerance:
            return self._set(True, f"key frames only: key-frame interval {interval:.2f} s <= sample "
                                   f"interval {self.sample_interval:g} s")
        return self._set(False, f"key-frame interval {interval:.2f} s > sample interval "
                                f"{self.sample_interval:g} s: all frames")

    def _set(self, keyframes_only: bool, reason: str) -> str | None:
        first, self._decided = not self._decided, True
        if keyframes_only == self.keyframes_only and not first:
            return None
        self.keyframes_only, self.reason = keyframes_only, f"decode {self.setting}: {reason}"
        return self.reason

    def info(self) -> dict:
        """For the stream's state: the setting, the mode in force, why, and what it cannot see."""
        out: dict = {"setting": self.setting, "mode": "keyframes" if self.keyframes_only else "all",
                     "reason": self.reason}
        if self.key_interval is not None:
            out["key_interval_s"] = round(self.key_interval, 3)
        if self.keyframes_only:
            out["unseen"] = list(KEYFRAME_LIMITS)
        return out

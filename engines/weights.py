"""Saving and loading trained weights, safely and with clear errors."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from .models.base import QualityModel
from .views import InputView

FORMAT = "vqmon-weights"
VERSION = 1


class WeightsError(RuntimeError):
    """A weights file that is missing, unreadable, or not for this model."""


def save_weights(model: QualityModel, path: str | Path, meta: dict | None = None,
                 half: bool = True) -> Path:
    """Store the model's state dict (fp16 by default, to keep shipped files small)."""
    path = Path(path)
    state = {k: (v.half() if half and v.is_floating_point() else v).contiguous()
             for k, v in model.state_dict().items()}
    view = model.input_view
    if view.mode == "resize":  # a whole-frame model is served at the size it was trained at
        view = InputView(mode="resize", size=model.input_size)
    meta = {**(meta or {}), "input_view": view.to_meta()}
    payload = {"format": FORMAT, "version": VERSION, "model": model.name,
               "input_size": view.side, "meta": meta, "state_dict": state}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_weights(model: QualityModel, path: str | Path) -> QualityModel:
    """Load ``path`` into ``model`` strictly (``weights_only=True``: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - arbitrary bytes fail in many ways (KeyError, IndexError,
        # UnicodeDecodeError...); weights_only=True means none of it ran code
        raise WeightsError(f"weights file {path} is corrupt or not a torch file: {e}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a vqmon weights file (no '{FORMAT}' header)")
    if payload.get("model") != model.name:
        raise WeightsError(f"{path} holds weights for model {payload.get('model')!r}, "
                           f"not {model.name!r}")
    own = model.state_dict()
    state = payload["state_dict"]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:5])}{' …' if len(keys) > 5 else ''}")
        raise WeightsError(f"{path} does not match model {model.name!r} ({'; '.join(parts)})")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    # the input size the weights were trained at is the one they are served at
    model.input_size = int(payload.get("input_size") or model.input_size)
    meta = payload.get("meta", {})
    model.input_view = InputView.from_meta(meta.get("input_view"), model.input_size)
    model.trained = True
    model.weights_info = {"path": str(path), "sha256": file_sha256(path), **payload.get("meta", {})}
    return model

"""Registries name things by ``"module:attribute"`` so that listing names imports nothing heavy."""
from __future__ import annotations

import importlib


def resolve(ref: str):
    """The attribute ``ref`` names, importing its module on first use."""
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)

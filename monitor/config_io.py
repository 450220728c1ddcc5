"""From YAML text to checked data: duplicate keys refused, ``${ENV}`` substituted, and
validation errors that name the field (``streams[1] 'cam2'.sample_rate: ...``) and the reason,
never a secret's value."""
from __future__ import annotations

import re
from typing import Any

import yaml
from pydantic import ValidationError

_ENV_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """An invalid configuration; the message names each bad field and why."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last
    silently: two ``url:`` in a stream would monitor the second without a word)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base": merged keys may be overridden
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    earlier = first.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key: SafeLoader's own error says so
                    continue
                if earlier is not key_node.start_mark:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}: first at line {earlier.line + 1}, again at "
                        f"line {key_node.start_mark.line + 1}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str = "<config>") -> Any:
    """YAML text as Python data (``yaml.safe_load`` that refuses duplicate keys); ConfigError
    with the position when it is not valid."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None


def format_validation_error(err: ValidationError, data: Any, source: str = "<config>") -> str:
    msgs = []
    for e in err.errors(include_url=False):
        loc = _format_loc(e["loc"], data)
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        elif e["type"] == "missing":
            msg = "required field missing"
        inp = e.get("input")
        if e["type"] not in ("missing", "extra_forbidden") and _is_scalar(inp) and not _secret_loc(e["loc"]):
            msg += f" (got {inp!r})"
        msgs.append(f"{loc or '<top level>'}: {msg}")
    return f"{source}: {len(msgs)} error(s):\n  " + "\n  ".join(msgs)


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) and not (isinstance(v, str) and len(v) > 80)


def _secret_loc(loc: tuple) -> bool:
    return any(str(p) in ("url", "password", "username", "options") for p in loc)


def _format_loc(loc: tuple, data: Any) -> str:
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            name = None
            if isinstance(node, list) and 0 <= part < len(node):
                node = node[part]
                if isinstance(node, dict) and isinstance(node.get("name"), str) and out.startswith("streams"):
                    name = node["name"]
            else:
                node = None
            if name and out == f"streams[{part}]":
                out += f" {name!r}"
        else:
            # pydantic adds the validator name for function validators; skip those
            if isinstance(part, str) and part.startswith("function-"):
                continue
            out += ("." if out else "") + str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out


def substitute_env(node: Any, env: dict[str, str], errors: list[str], path: tuple = ()) -> Any:
    """``node`` with ``${VAR}`` / ``${VAR:-fallback}`` replaced from ``env`` (``$$``: a ``$``); a
    variable that is not set is added to ``errors`` with where it was used."""
    if isinstance(node, dict):
        return {k: substitute_env(v, env, errors, path + (k,)) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute_env(v, env, errors, path + (i,)) for i, v in enumerate(node)]
    if isinstance(node, str) and "$" in node:
        def repl(m: re.Match) -> str:
            if m.group(0) == "$$":
                return "$"
            name, fallback = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if fallback is not None:
                return fallback
            errors.append(f"{_format_loc(path, None)}: environment variable {name} is not set")
            return ""
        return _ENV_RE.sub(repl, node)
    return node

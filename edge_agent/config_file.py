"""Loading a gateway's YAML file: environment variables expanded, and every error named by
file, line and field (the model is in :mod:`edge_agent.config`)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from edge_agent.config import GatewayConfig
from edge_agent.errors import ConfigError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


class _LineLoader(yaml.SafeLoader):
    """A safe loader that remembers the line of every mapping key and sequence item."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        lines[key] = (key_node.start_mark.line + 1, value_node.start_mark.line + 1)
    mapping["__lines__"] = lines
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _strip(data: Any, env: Mapping[str, str], path: str, lines: dict[str, int], file: str) -> Any:
    """Drop the line bookkeeping into ``lines`` and expand ``${VAR}`` in strings."""
    if isinstance(data, dict):
        key_lines = data.pop("__lines__", {})
        lines[path] = data.pop("__line__", 0)
        out = {}
        for k, v in data.items():
            child = f"{path}.{k}" if path else str(k)
            lines[child] = key_lines.get(k, (0, 0))[0]
            out[k] = _strip(v, env, child, lines, file)
        return out
    if isinstance(data, list):
        return [_strip(v, env, f"{path}.{i}", lines, file) for i, v in enumerate(data)]
    if isinstance(data, str) and "${" in data:
        return _expand(data, env, path, lines, file)
    return data


def _expand(text: str, env: Mapping[str, str], path: str, lines: dict[str, int], file: str) -> Any:
    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{file}:{_line_of(path, lines)}: {path}: environment variable {name} is not set"
            " (set it, or write ${" + name + ":-default})"
        )

    out = _ENV.sub(repl, text)
    # A whole-value reference becomes a YAML scalar again, so ports stay integers.
    if _ENV.fullmatch(text):
        try:
            return yaml.safe_load(out) if out.strip() else out
        except yaml.YAMLError:
            return out
    return out


def _line_of(path: str, lines: dict[str, int]) -> int:
    while path:
        if lines.get(path):
            return lines[path]
        path = path.rpartition(".")[0]
    return lines.get("", 1) or 1


def _describe(err: ValidationError, lines: dict[str, int], file: str, data: Any) -> str:
    msgs = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"] if not str(p).startswith(("function-", "tagged-union"))]
        # drop the discriminator value pydantic puts in the path ("modbus", "opcua")
        loc = [p for i, p in enumerate(loc) if not (i > 0 and p in ("modbus", "opcua"))]
        path = ".".join(loc)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; allowed fields are in the example config)"
        elif e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            path += ".protocol"
            got = (e.get("ctx") or {}).get("tag", "nothing")
            msg = f"protocol {got!r} is not supported: use modbus or opcua"
        msgs.append(f"{file}:{_line_of(path, lines)}: {path or '(top level)'}: {msg}")
    return "\n".join(msgs)


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Load and validate a gateway YAML file; raise ConfigError naming file, line and field."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{file}: cannot read the config file: {err.strerror}") from None
    try:
        raw = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else file
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}:1: the config must be a mapping with agent, line and devices")
    lines: dict[str, int] = {}
    data = _strip(raw, os.environ if env is None else env, "", lines, file)
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, lines, file, data)) from None

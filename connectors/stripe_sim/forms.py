"""Stripe's form encoding: `a[b][0][c]=v` bracket keys into nested dicts and lists.

`Params` wraps the decoded tree with typed getters that raise Stripe-shaped 400s.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from connectors.stripe_sim.errors import invalid_param, missing_param, unknown_param

Tree = dict[str, Any]
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")


def _split_key(key: str) -> list[str]:
    head, _, rest = key.partition("[")
    return [head, *_SEGMENT.findall("[" + rest)] if rest else [head]


def _insert(tree: Tree, parts: list[str], value: str) -> None:
    node = tree
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "":  # `expand[]=x`: append to a list kept under a fresh index
            part = str(len(node))
        if last:
            node[part] = value
        else:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise invalid_param(parts[0], f"Invalid nesting of parameter {parts[0]}.")
            node = child


def _listify(node: Any, name: str = "") -> Any:
    """Dicts whose keys are all indices become lists ordered by index (metadata keys stay)."""
    if not isinstance(node, dict):
        return node
    converted = {key: _listify(value, key) for key, value in node.items()}
    if name != "metadata" and converted and all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted


def parse_form(query: str | bytes) -> Tree:
    text = query.decode("utf-8") if isinstance(query, bytes) else query
    tree: Tree = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        _insert(tree, _split_key(key), value)
    result = _listify(tree)
    return result if isinstance(result, dict) else {}


def _as_bool(name: str, raw: Any) -> bool:
    if raw in ("true", True):
        return True
    if raw in ("false", False):
        return False
    raise invalid_param(name, f"Invalid boolean: {raw}")


def _as_int(name: str, raw: Any) -> int:
    try:
        return int(str(raw))
    except ValueError:
        raise invalid_param(name, f"Invalid integer: {raw}", "parameter_invalid_integer") from None


def _as_decimal(name: str, raw: Any) -> Decimal:
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise invalid_param(name, f"Invalid decimal: {raw}") from None
    if not value.is_finite():
        raise invalid_param(name, f"Invalid decimal: {raw}")
    return value


class Params:
    """A decoded request tree with typed, Stripe-erroring accessors."""

    def __init__(self, tree: Mapping[str, Any], prefix: str = "") -> None:
        self.tree = dict(tree)
        self._prefix = prefix

    def _name(self, key: str) -> str:
        return f"{self._prefix}[{key}]" if self._prefix else key

    def has(self, key: str) -> bool:
        return key in self.tree

    def only(self, allowed: Iterable[str]) -> Params:
        known = set(allowed) | {"expand"}
        for key in self.tree:
            if key not in known:
                raise unknown_param(self._name(key))
        return self

    def text(self, key: str, default: str | None = None) -> str | None:
        raw = self.tree.get(key)
        if raw is None:
            return default
        if not isinstance(raw, str):
            raise invalid_param(self._name(key), f"Invalid string: {self._name(key)}")
        return raw

    def need_text(self, key: str) -> str:
        value = self.text(key)
        if not value:
            raise missing_param(self._name(key))
        return value

    def whole(self, key: str, default: int | None = None) -> int | None:
        raw = self.tree.get(key)
        return default if raw in (None, "") else _as_int(self._name(key), raw)

    def flag(self, key: str, default: bool | None = None) -> bool | None:
        raw = self.tree.get(key)
        return default if raw in (None, "") else _as_bool(self._name(key), raw)

    def decimal(self, key: str) -> Decimal | None:
        raw = self.tree.get(key)
        return None if raw in (None, "") else _as_decimal(self._name(key), raw)

    def sub(self, key: str) -> Params | None:
        raw = self.tree.get(key)
        if raw is None or raw == "":
            return None
        if not isinstance(raw, dict):
            raise invalid_param(self._name(key), f"Invalid object: {self._name(key)}")
        return Params(raw, self._name(key))

    def items(self, key: str) -> list[Params]:
        raw = self.tree.get(key)
        if raw is None or raw == "":
            return []
        if not isinstance(raw, list) or not all(isinstance(entry, dict) for entry in raw):
            raise invalid_param(self._name(key), f"Invalid array: {self._name(key)}")
        return [Params(entry, f"{self._name(key)}[{i}]") for i, entry in enumerate(raw)]

    def strings(self, key: str) -> list[str]:
        raw = self.tree.get(key)
        if raw is None or raw == "":
            return []
        values = raw if isinstance(raw, list) else [raw]
        if not all(isinstance(value, str) for value in values):
            raise invalid_param(self._name(key), f"Invalid array: {self._name(key)}")
        return list(values)

    def metadata(self, current: Mapping[str, str] | None = None) -> dict[str, str] | None:
        """Stripe's metadata merge: keys set, `key=""` unsets, `metadata=""` clears all."""
        if "metadata" not in self.tree:
            return None
        raw = self.tree["metadata"]
        if raw == "":
            return {}
        if not isinstance(raw, dict):
            raise invalid_param("metadata", "Invalid metadata: expected a hash.")
        merged = dict(current or {})
        for key, value in raw.items():
            if not isinstance(value, str):
                raise invalid_param(f"metadata[{key}]", "Metadata values must be strings.")
            if value == "":
                merged.pop(key, None)
            else:
                merged[key] = value
        return merged

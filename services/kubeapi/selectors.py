"""Label and field selectors, parsed once per request and matched against stored objects.

Label selectors support the set-based grammar kubectl and client libraries send: ``k=v``,
``k==v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``, ``k notin (a,b)``, comma-joined (AND).

Field selectors support ``=``, ``==`` and ``!=`` on any dotted path of the object
(``metadata.name``, ``metadata.namespace``, ``involvedObject.uid`` for ``kubectl describe``'s event
search, ``type``...). The real server only allows a per-kind list of fields and answers 400 for
others; accepting any path is a deliberate simplification. A missing field compares as "".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shardgate.kubeapi.errors import bad_request

_SET_RE = re.compile(r"^\s*(!?)\s*([^\s!=,()]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")
_EQ_RE = re.compile(r"^\s*([^\s!=,()]+)\s*(==|=|!=)\s*([^\s!=,()]*)\s*$")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``in (...)`` parentheses."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in (p.strip() for p in parts) if p]


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str
    """One of ``=``, ``!=``, ``in``, ``notin``, ``exists``, ``!exists``."""
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        # "!=" and "notin" match objects without the label, as in Kubernetes.
        return not present or labels[self.key] not in self.values


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        if not text:
            return cls()
        reqs: list[Requirement] = []
        for part in _split_top_level(text):
            eq = _EQ_RE.match(part)
            if eq:
                key, op, value = eq.groups()
                reqs.append(Requirement(key, "!=" if op == "!=" else "=", frozenset([value])))
                continue
            m = _SET_RE.match(part)
            if not m:
                raise bad_request(f"unable to parse requirement: {part!r}")
            bang, key, setop, values = m.groups()
            if setop:
                if bang:
                    raise bad_request(f"unable to parse requirement: {part!r}")
                vals = frozenset(v.strip() for v in values.split(",") if v.strip())
                reqs.append(Requirement(key, setop, vals))
            else:
                reqs.append(Requirement(key, "!exists" if bang else "exists", frozenset()))
        return cls(tuple(reqs))

    def __bool__(self) -> bool:
        return bool(self.requirements)

    def matches(self, obj: Mapping[str, Any]) -> bool:
        if not self.requirements:
            return True
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(r.matches(labels) for r in self.requirements)


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    path: tuple[str, ...]
    negate: bool
    value: str

    def matches(self, obj: Mapping[str, Any]) -> bool:
        cur: Any = obj
        for step in self.path:
            cur = cur.get(step) if isinstance(cur, Mapping) else None
        actual = "" if cur is None else (str(cur).lower() if isinstance(cur, bool) else str(cur))
        return (actual == self.value) != self.negate


@dataclass(frozen=True, slots=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> FieldSelector:
        if not text:
            return cls()
        reqs: list[FieldRequirement] = []
        for part in _split_top_level(text):
            m = _EQ_RE.match(part)
            if not m:
                raise bad_request(f"invalid field selector: {part!r}")
            key, op, value = m.groups()
            reqs.append(FieldRequirement(tuple(key.split(".")), op == "!=", value))
        return cls(tuple(reqs))

    def __bool__(self) -> bool:
        return bool(self.requirements)

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all(r.matches(obj) for r in self.requirements)

    def exact(self, path: str) -> str | None:
        """The value required by ``path=value``, so the store can look one object up directly."""
        want = tuple(path.split("."))
        for r in self.requirements:
            if r.path == want and not r.negate:
                return r.value
        return None


@dataclass(frozen=True, slots=True)
class Filter:
    """Everything that narrows a list or watch besides kind and namespace."""

    labels: LabelSelector = LabelSelector()
    fields: FieldSelector = FieldSelector()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return self.labels.matches(obj) and self.fields.matches(obj)

    @property
    def everything(self) -> bool:
        return not self.labels and not self.fields


EVERYTHING = Filter()

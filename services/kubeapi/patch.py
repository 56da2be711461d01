"""The PATCH body formats: JSON merge patch, strategic merge patch, JSON patch.

All functions are pure: they return a new document and never modify their inputs (unchanged
sub-trees may be shared with the input, which the store never mutates).

Strategic merge patch is a simplification of the real one, which reads per-field merge keys from
the Go types. Here a list is merged element-wise when

* the patch carries ``$setElementOrder/<field>`` (kubectl's client-side apply always sends it for
  merge-keyed lists); the merge key is the key its entries use (``name``, ``port``...), or
* every element of both lists is a map with a ``name``;

otherwise the patch's list replaces the stored one. The directives ``$patch: replace|delete``
(on maps and list elements), ``$retainKeys``, ``$setElementOrder/`` and
``$deleteFromPrimitiveList/`` are honoured.

Server-side apply (``application/apply-patch+yaml``) is handled by the routes as
create-if-absent, else a strategic merge of the applied object onto the stored one: no field
ownership, no managedFields, and fields left out of a later apply are not removed.
"""

from __future__ import annotations

import copy
from typing import Any

from shardgate.kubeapi.errors import ApiError, bad_request

_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"
_DIRECTIVES = ("$patch", "$retainKeys")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _strip(value: Any) -> Any:
    """Drop strategic-merge directives from a value that is inserted as-is."""
    if isinstance(value, dict):
        return {
            k: _strip(v)
            for k, v in value.items()
            if k not in _DIRECTIVES and not k.startswith((_ORDER, _DELETE_PRIMITIVE))
        }
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def strategic_merge(target: Any, patch: Any) -> Any:
    """Strategic merge patch (see the module docstring for what is simplified)."""
    if not isinstance(patch, dict):
        return patch
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip(patch)
    if directive == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    orders = {k[len(_ORDER) :]: v for k, v in patch.items() if k.startswith(_ORDER)}
    for key, value in patch.items():
        if key in _DIRECTIVES or key.startswith(_ORDER):
            continue
        if key.startswith(_DELETE_PRIMITIVE):
            field = key[len(_DELETE_PRIMITIVE) :]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [x for x in result[field] if x not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, orders.get(key))
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = value
    for key, order in orders.items():
        if key not in patch and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], [], order)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_key(original: list[Any], patch: list[Any], order: Any) -> str | None:
    if isinstance(order, list) and order and all(isinstance(o, dict) and len(o) == 1 for o in order):
        return str(next(iter(order[0])))
    if (
        original
        and all(isinstance(e, dict) and "name" in e for e in original)
        and all(isinstance(e, dict) and ("name" in e) for e in patch)
    ):
        return "name"
    return None


def _merge_list(original: Any, patch: list[Any], order: Any) -> list[Any]:
    if any(isinstance(e, dict) and e.get("$patch") == "replace" for e in patch):
        return [_strip(e) for e in patch if not (isinstance(e, dict) and "$patch" in e)]
    orig = original if isinstance(original, list) else []
    if patch and not all(isinstance(e, dict) for e in patch):
        if isinstance(order, list) and order and not isinstance(order[0], dict):
            merged = orig + [e for e in patch if e not in orig]
            places: dict[Any, int] = {v: i for i, v in enumerate(order) if isinstance(v, str | int)}
            return sorted(merged, key=lambda v: places.get(v, len(places)))
        return list(patch)
    key = _merge_key(orig, patch, order)
    if key is None:
        return [_strip(e) for e in patch]
    out: list[Any] = list(orig)
    index = {e.get(key): i for i, e in enumerate(out) if isinstance(e, dict)}
    removed: set[int] = set()
    for element in patch:
        k = element.get(key)
        at = index.get(k)
        if element.get("$patch") == "delete":
            if at is not None:
                removed.add(at)
            continue
        if at is None:
            index[k] = len(out)
            out.append(_strip(element))
        else:
            out[at] = strategic_merge(out[at], element)
    out = [e for i, e in enumerate(out) if i not in removed]
    if isinstance(order, list) and order:
        rank: dict[Any, int] = {o.get(key): i for i, o in enumerate(order) if isinstance(o, dict)}
        out.sort(key=lambda e: rank.get(e.get(key) if isinstance(e, dict) else None, len(rank)))
    return out


# ---- RFC 6902 JSON patch ---------------------------------------------------------------------


def _failed(message: str) -> ApiError:
    return ApiError(422, "Invalid", f"the server rejected our request due to an error: {message}")


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise bad_request(f"invalid JSON pointer: {path!r}")
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> Any:
    cur = doc
    for part in parts[:-1]:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise _failed(f"path /{'/'.join(parts)} does not exist")
    return cur


def _get(doc: Any, parts: list[str]) -> Any:
    if not parts:
        return doc
    parent = _parent(doc, parts)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise _failed(f"path /{'/'.join(parts)} does not exist")


def _remove(doc: Any, parts: list[str]) -> Any:
    value = _get(doc, parts)
    parent = _parent(doc, parts)
    if isinstance(parent, dict):
        del parent[parts[-1]]
    else:
        del parent[int(parts[-1])]
    return value


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _parent(doc, parts)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise _failed(f"index {last} out of range")
    else:
        raise _failed(f"cannot add at /{'/'.join(parts)}")
    return doc


def json_patch(document: Any, operations: Any) -> Any:
    """RFC 6902: add, remove, replace, move, copy, test."""
    if not isinstance(operations, list):
        raise bad_request("a JSON patch must be a list of operations")
    doc = copy.deepcopy(document)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op:
            raise bad_request(f"invalid JSON patch operation: {op!r}")
        kind = op["op"]
        parts = _pointer(op.get("path"))
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, parts)
        elif kind == "replace":
            _get(doc, parts)
            if parts:
                _remove(doc, parts)
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from"))
            value = _remove(doc, source) if kind == "move" else copy.deepcopy(_get(doc, source))
            doc = _add(doc, parts, value)
        elif kind == "test":
            if _get(doc, parts) != op.get("value"):
                raise _failed(f"test failed at {op.get('path')}")
        else:
            raise bad_request(f"unknown JSON patch operation: {kind!r}")
    return doc

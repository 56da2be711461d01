"""Kubernetes ``Status`` errors, raised by the store and turned into responses at the HTTP edge.

Clients branch on ``reason`` and ``code`` (kubectl prints ``message``; kubernetes-asyncio raises
``ApiException(status=code)``), so every failure the stand-in can produce is one ``ApiError``
carrying the exact Status body the real API server would send::

    ApiError
      NotFound 404, AlreadyExists 409, Conflict 409, BadRequest 400, Invalid 422,
      MethodNotAllowed 405, Forbidden 403, UnsupportedMediaType 415, Expired 410 (and Gone 410)
"""

from __future__ import annotations

from typing import Any

from shardgate.kubeapi.kinds import Kind


class ApiError(Exception):
    """A failure that is answered with a ``Status`` object."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        name: str = "",
        kind: Kind | None = None,
        causes: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.name = name
        self.kind = kind
        self.causes = causes

    def status(self) -> dict[str, Any]:
        details: dict[str, Any] = {}
        if self.name:
            details["name"] = self.name
        if self.kind is not None:
            details["group"] = self.kind.group
            # The real server puts the resource (plural) here, not the Kind.
            details["kind"] = self.kind.plural
        if self.causes:
            details["causes"] = self.causes
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if details:
            body["details"] = details
        return body


def not_found(kind: Kind, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{kind.qualified} "{name}" not found', name=name, kind=kind)


def already_exists(kind: Kind, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{kind.qualified} "{name}" already exists', name=name, kind=kind)


def conflict(kind: Kind, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {kind.qualified} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        name=name,
        kind=kind,
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(kind: Kind, name: str, field: str, message: str) -> ApiError:
    return ApiError(
        422,
        "Invalid",
        f'{kind.kind} "{name}" is invalid: {field}: {message}',
        name=name,
        kind=kind,
        causes=[{"reason": "FieldValueInvalid", "message": message, "field": field}],
    )


def method_not_allowed(message: str = "the server does not allow this method") -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown "
        f"format - accepted media types include: application/json, "
        f"application/merge-patch+json (got {content_type!r})",
    )


def not_found_path(path: str) -> ApiError:
    return ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def forbidden(message: str) -> ApiError:
    return ApiError(403, "Forbidden", message)

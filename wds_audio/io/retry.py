"""Which failures are worth a retry, and the short reason each is counted under."""
from __future__ import annotations

import http.client
import urllib.request
from typing import Iterator

# ---- failures: which ones are worth a retry, and what to call them ----------------------------


class _HTTPStatus(Exception):
    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(code, message)
        self.code = code

    def __str__(self) -> str:
        return f"HTTP {self.code} {self.args[1]}".strip()


class _Truncated(Exception):
    """The body ended before the object's size."""


_FATAL = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, TypeError,
          ValueError, AttributeError, KeyError, IndexError, NameError, ImportError, NotImplementedError,
          AssertionError)


_FATAL_NAMES = ("Credentials", "ParamValidation", "InvalidConfig", "UnknownService")


def _chain(e: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        reason = getattr(e, "reason", None)
        if isinstance(e, urllib.error.URLError) and isinstance(reason, BaseException):
            e = reason
        else:
            e = e.__cause__ or e.__context__


def _status_of(e: BaseException) -> int | None:
    for x in _chain(e):
        if isinstance(x, _HTTPStatus):
            return x.code
        resp = getattr(x, "response", None)  # botocore ClientError
        if isinstance(resp, dict):
            code = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if isinstance(code, int):
                return code
    return None


def _is_timeout(x: BaseException) -> bool:
    return isinstance(x, TimeoutError) or "Timeout" in type(x).__name__


def _is_refused(x: BaseException) -> bool:
    return isinstance(x, ConnectionRefusedError)


def _is_reset(x: BaseException) -> bool:
    name = type(x).__name__
    # aiohttp keeps the reset only in the text of its ClientPayloadError
    return isinstance(x, (ConnectionError, http.client.RemoteDisconnected)) or "Disconnect" in name \
        or ("Payload" in name and "ConnectionResetError" in str(x))


def _is_truncated(x: BaseException) -> bool:
    name = type(x).__name__
    return isinstance(x, (_Truncated, http.client.IncompleteRead)) or "Payload" in name or "IncompleteRead" in name


# The most specific cause wins: aiohttp, for one, reports a reset as an incomplete payload.
_LABELS = (("timeout", _is_timeout), ("refused", _is_refused), ("reset", _is_reset), ("truncated", _is_truncated))


def reason_of(e: BaseException) -> str:
    """A short, stable label for a failure: timeout, reset, refused, truncated, http <code>, ..."""
    status = _status_of(e)
    if status is not None:
        return f"http {status}"
    if isinstance(e, FileNotFoundError):
        return "not found"
    if isinstance(e, PermissionError):
        return "permission denied"
    chain = list(_chain(e))
    for label, test in _LABELS:
        if any(test(x) for x in chain):
            return label
    return f"error: {type(e).__name__}: {e}"[:200]


def _retriable(e: BaseException) -> bool:
    status = _status_of(e)
    if status is not None:
        return status >= 500 or status in (408, 425, 429)
    # botocore's configuration errors (no credentials, bad parameters) will not heal by waiting
    return not isinstance(e, _FATAL) and not any(w in type(e).__name__ for w in _FATAL_NAMES)

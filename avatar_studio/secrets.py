"""Keep secrets out of logs: every registered secret is replaced in every log record, everywhere.

Why at record creation (a log-record factory) rather than a handler filter: a filter only sees
records of the handlers it is attached to, and third-party libraries (httpx, botocore) log
through their own loggers and whatever handlers the host app configures. Redacting when the
record is made covers them all, including exception text formatted later from ``args``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

REDACTED = "[redacted]"
_MIN_LENGTH = 6  # shorter values would redact ordinary words
_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False


def register_secret(value: str | None) -> None:
    """Never let ``value`` (an API key, a token) appear in a log message from now on."""
    global _installed
    if not value or len(value) < _MIN_LENGTH:
        return
    with _lock:
        _secrets.add(value)
        for part in value.split(":"):  # "client_id:client_secret" keys: each half is secret too
            if len(part) >= _MIN_LENGTH:
                _secrets.add(part)
        if not _installed:
            previous = logging.getLogRecordFactory()

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                _redact(record)
                return record

            logging.setLogRecordFactory(factory)
            _installed = True


def redact(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def _redact(record: logging.LogRecord) -> None:
    if not _secrets:
        return
    message = record.getMessage()  # formats msg % args once, so secrets inside args are caught too
    cleaned = redact(message)
    if cleaned != message or record.args:
        record.msg, record.args = cleaned, None
    if record.exc_info and not record.exc_text:  # tracebacks quote exception messages: redact them too
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))

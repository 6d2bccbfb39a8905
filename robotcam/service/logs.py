"""Logging setup that suits both a terminal and the systemd journal.

Under systemd, stdout/stderr are a stream to journald, which adds its own
timestamp and reads an optional "<N>" syslog priority at the start of each
line. Emitting that prefix (and no timestamp) makes `journalctl -p warning`
work. journald splits the stream on newlines, so every line of a multi-line
record (tracebacks!) carries the prefix; otherwise continuation lines would
be stored at the default priority (info).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["setup_logging", "set_level", "parse_level", "JournalFormatter", "PLAIN_FORMAT", "quiet_bad_requests"]

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# WebRTC libraries log every packet at DEBUG and every ICE check at INFO: keep them a step
# quieter than robotcam's own level, so `level: debug` stays readable.
_CHATTY_LIBRARIES = ("aiortc", "aioice")

# Marks the handler we installed so that reconfiguring replaces it instead of
# stacking a second one (which would print every line twice).
_HANDLER_ATTR = "_robotcam_handler"


def parse_level(level: str | int) -> int:
    """Map "debug"/"info"/"warning"/"error" (any case) to a logging level."""
    if isinstance(level, int):
        return level
    try:
        return _LEVELS[level.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; expected one of debug, info, warning, error") from None


def _syslog_priority(levelno: int) -> int:
    if levelno >= logging.ERROR:
        return 3  # LOG_ERR
    if levelno >= logging.WARNING:
        return 4  # LOG_WARNING
    if levelno >= logging.INFO:
        return 6  # LOG_INFO
    return 7  # LOG_DEBUG


class JournalFormatter(logging.Formatter):
    """`<N>name: message`, with `<N>` repeated on every continuation line."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{_syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in text.split("\n"))


def _is_journal_stream(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """True if *stream* is the journald stream systemd announced.

    JOURNAL_STREAM is "<dev>:<inode>" of the stream systemd connected. It is
    inherited by children whose stderr may point elsewhere (a pipe, a file),
    so when the stream has a real fd it must match; streams without an fd
    (tests, wrappers) trust the variable.
    """
    value = environ.get("JOURNAL_STREAM")
    if not value:
        return False
    try:
        dev_s, ino_s = value.split(":", 1)
        dev, ino = int(dev_s), int(ino_s)
    except ValueError:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return True
    return st.st_dev == dev and st.st_ino == ino


def setup_logging(
    level: str | int,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Configure the root logger once; safe to call again (e.g. on reload)."""
    levelno = parse_level(level)
    env = os.environ if environ is None else environ
    out = sys.stderr if stream is None else stream

    handler = logging.StreamHandler(out)
    if _is_journal_stream(out, env):
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    setattr(handler, _HANDLER_ATTR, True)

    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_ATTR, False):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    set_level(levelno)
    # Route warnings.warn() (e.g. deprecations in dependencies) through the
    # same handler instead of raw stderr lines without a priority.
    logging.captureWarnings(True)


def set_level(level: str | int) -> None:
    """Change verbosity at runtime (config reload) without re-creating handlers."""
    levelno = parse_level(level)
    logging.getLogger().setLevel(levelno)
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.INFO if levelno <= logging.DEBUG else logging.WARNING)


class BadRequestFilter(logging.Filter):
    """aiohttp logs every malformed request it answers 400 itself (bad request line or headers,
    an unsupported Content-Encoding) at ERROR with a traceback: any scanner on the network would
    fill the journal with errors. Those are the client's fault: one INFO line, no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and (exc.code or 400) < 500:
            record.msg = f"{record.msg}: %s"
            record.args = (*(record.args if isinstance(record.args, tuple) else ()), " ".join(str(exc).split()))
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_bad_requests() -> None:
    """Install BadRequestFilter on aiohttp's server logger (once per process)."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, BadRequestFilter) for f in server_log.filters):
        server_log.addFilter(BadRequestFilter())

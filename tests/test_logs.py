"""Log formatting for journald (priority prefixes) and for terminals (timestamps)."""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from robotcam.service.logs import parse_level, set_level, setup_logging

JOURNAL_ENV = {"JOURNAL_STREAM": "8:123456"}
TIMESTAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
        logging.captureWarnings(False)


def our_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(h, "_robotcam_handler", False)]


def emit_all_levels(log: logging.Logger) -> None:
    log.debug("dbg")
    log.info("inf")
    log.warning("wrn")
    log.error("err")
    log.critical("crit")


def test_journal_format_has_priority_prefix_and_no_timestamp() -> None:
    out = io.StringIO()
    setup_logging("debug", stream=out, environ=JOURNAL_ENV)
    emit_all_levels(logging.getLogger("robotcam.test"))
    assert out.getvalue().splitlines() == [
        "<7>robotcam.test: dbg",
        "<6>robotcam.test: inf",
        "<4>robotcam.test: wrn",
        "<3>robotcam.test: err",
        "<3>robotcam.test: crit",
    ]
    assert not re.search(r"\d\d:\d\d:\d\d", out.getvalue())


def test_journal_traceback_lines_all_carry_the_priority() -> None:
    out = io.StringIO()
    setup_logging("info", stream=out, environ=JOURNAL_ENV)
    log = logging.getLogger("robotcam.video.pipeline")
    try:
        raise RuntimeError("camera vanished")
    except RuntimeError:
        log.exception("capture failed")
    lines = out.getvalue().splitlines()
    assert lines[0] == "<3>robotcam.video.pipeline: capture failed"
    assert lines[1] == "<3>Traceback (most recent call last):"
    assert lines[-1] == "<3>RuntimeError: camera vanished"
    assert len(lines) > 3
    assert all(line.startswith("<3>") for line in lines), lines


def test_journal_multiline_message_and_stack_info() -> None:
    out = io.StringIO()
    setup_logging("info", stream=out, environ=JOURNAL_ENV)
    log = logging.getLogger("robotcam.test")
    log.warning("first\nsecond\n\nfourth")
    log.info("where am I", stack_info=True)
    lines = out.getvalue().splitlines()
    assert lines[:4] == ["<4>robotcam.test: first", "<4>second", "<4>", "<4>fourth"]
    assert lines[4] == "<6>robotcam.test: where am I"
    assert len(lines) > 5
    assert all(line.startswith("<6>") for line in lines[4:]), lines


def test_plain_format_has_timestamp_level_and_name() -> None:
    out = io.StringIO()
    setup_logging("debug", stream=out, environ={})
    emit_all_levels(logging.getLogger("robotcam.test"))
    lines = out.getvalue().splitlines()
    levels = ["DEBUG dbg", "INFO inf", "WARNING wrn", "ERROR err", "CRITICAL crit"]
    assert len(lines) == len(levels)
    for line, expected in zip(lines, levels):
        level, message = expected.split()
        assert re.fullmatch(rf"{TIMESTAMP} {level} robotcam\.test: {message}", line), line
    assert "<" not in out.getvalue()


def test_plain_format_keeps_tracebacks() -> None:
    out = io.StringIO()
    setup_logging("info", stream=out, environ={})
    try:
        raise ValueError("bad frame")
    except ValueError:
        logging.getLogger("robotcam.test").exception("oops")
    text = out.getvalue()
    assert re.match(rf"{TIMESTAMP} ERROR robotcam\.test: oops\nTraceback", text)
    assert text.rstrip().endswith("ValueError: bad frame")


def test_journal_stream_must_match_the_real_fd(tmp_path: Path) -> None:
    # JOURNAL_STREAM is inherited by children whose stderr may be a file or
    # pipe: then it does not describe our stream and must be ignored.
    with open(tmp_path / "log.txt", "w+") as stream:
        st = os.fstat(stream.fileno())
        setup_logging("info", stream=stream, environ={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        logging.getLogger("robotcam.test").info("to a file")
        setup_logging("info", stream=stream, environ={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        logging.getLogger("robotcam.test").info("to the journal")
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert re.fullmatch(rf"{TIMESTAMP} INFO robotcam\.test: to a file", lines[0])
    assert lines[1] == "<6>robotcam.test: to the journal"


def test_malformed_journal_stream_means_plain() -> None:
    out = io.StringIO()
    setup_logging("info", stream=out, environ={"JOURNAL_STREAM": "garbage"})
    logging.getLogger("robotcam.test").info("x")
    assert re.fullmatch(rf"{TIMESTAMP} INFO robotcam\.test: x\n", out.getvalue())


def test_reconfiguring_does_not_duplicate_handlers() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("info", stream=first, environ={})
    setup_logging("info", stream=second, environ=JOURNAL_ENV)
    setup_logging("info", stream=second, environ=JOURNAL_ENV)
    assert len(our_handlers()) == 1
    logging.getLogger("robotcam.test").info("once")
    assert first.getvalue() == ""
    assert second.getvalue() == "<6>robotcam.test: once\n"


def test_level_filtering_and_set_level() -> None:
    out = io.StringIO()
    setup_logging("WARNING", stream=out, environ=JOURNAL_ENV)
    log = logging.getLogger("robotcam.test")
    log.info("hidden")
    log.warning("shown")
    set_level("Debug")
    log.debug("now visible")
    set_level("error")
    log.warning("hidden again")
    assert out.getvalue().splitlines() == ["<4>robotcam.test: shown", "<7>robotcam.test: now visible"]
    assert len(our_handlers()) == 1


@pytest.mark.parametrize(
    ("name", "level"),
    [("debug", logging.DEBUG), ("INFO", logging.INFO), ("Warning", logging.WARNING),
     ("error", logging.ERROR), (" info ", logging.INFO)],
)
def test_parse_level(name: str, level: int) -> None:
    assert parse_level(name) == level


def test_unknown_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="verbose"):
        setup_logging("verbose", stream=io.StringIO(), environ={})
    with pytest.raises(ValueError):
        set_level("loud")


def test_python_warnings_go_through_the_handler() -> None:
    out = io.StringIO()
    setup_logging("info", stream=out, environ=JOURNAL_ENV)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old api", DeprecationWarning, stacklevel=1)
    lines = out.getvalue().splitlines()
    assert lines, "warnings.warn() output should be logged"
    assert all(line.startswith("<4>") for line in lines), lines
    assert "old api" in out.getvalue()


def test_default_stream_is_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", environ={})
    logging.getLogger("robotcam.test").info("on stderr")
    captured = capsys.readouterr()
    assert "INFO robotcam.test: on stderr" in captured.err
    assert captured.out == ""


def test_webrtc_libraries_stay_a_step_quieter() -> None:
    import io
    import logging as stdlib_logging

    from robotcam.service.logs import setup_logging

    stream = io.StringIO()
    setup_logging("debug", stream=stream, environ={})
    stdlib_logging.getLogger("aiortc.rtcrtpsender").debug("> RtpPacket(seq=1)")
    stdlib_logging.getLogger("aioice.ice").info("Check succeeded")
    stdlib_logging.getLogger("robotcam.video.hub").debug("viewer fell behind")
    out = stream.getvalue()
    assert "RtpPacket" not in out and "Check succeeded" in out and "fell behind" in out
    setup_logging("info", stream=stream, environ={})
    stdlib_logging.getLogger("aioice.ice").info("another check")
    assert "another check" not in stream.getvalue()

"""FileSource: a video file looped at its own frame rate, its errors, and a viewer watching it."""

from __future__ import annotations

import errno
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import av
import av.error
import pytest

from robotcam.config import VideoConfig
from robotcam.video.sources.base import SourceError
from robotcam.video.sources.file import FileSource
from robotcam.video.sources.testpattern import TestPatternSource, decode_frame_number
from tests.conftest import make_config
from tests.viewer import Viewer


def write_clip(
    path: Path, frames: int = 10, fps: int = 10, width: int = 320, height: int = 240,
    codec: str = "mpeg4", pix_fmt: str = "yuv420p", options: dict[str, str] | None = None,
    container_format: str | None = None, render: Callable[[int], av.VideoFrame] | None = None,
) -> Path:
    """A clip of numbered test-pattern frames (decode_frame_number reads 0, 1, 2, ...), or of
    what `render(number)` draws."""
    pattern = TestPatternSource(width, height, fps)
    render = render or (lambda number: pattern.render(number, time.time()))
    with av.open(str(path), "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = options if options is not None else ({"qscale": "2"} if codec == "mpeg4" else {})
        out.start_encoding()  # the header, even for a clip of no frames
        for number in range(frames):
            frame = render(number)
            if pix_fmt != "yuv420p":
                frame = frame.reformat(format=pix_fmt)
            frame.pts = number
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


class Sink:
    """Collects what a source delivers (from its thread)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.numbers: list[int | None] = []
        self.times: list[float] = []
        self.sizes: set[tuple[int, int]] = set()
        self.delay = delay
        self.lock = threading.Lock()

    def on_frame(self, frame: av.VideoFrame) -> None:
        number = decode_frame_number(frame)
        with self.lock:
            self.numbers.append(number)
            self.times.append(time.monotonic())
            self.sizes.add((frame.width, frame.height))
        if self.delay:
            time.sleep(self.delay)

    def on_packet(self, packet: av.Packet) -> None:  # pragma: no cover - frame sources only
        raise AssertionError("a frame source delivered a packet")

    def wait(self, count: int, timeout: float = 10.0) -> list[int | None]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.numbers) >= count:
                    return list(self.numbers)
            time.sleep(0.02)
        raise AssertionError(f"got {len(self.numbers)} of {count} frames in {timeout} s")


def video(**values: Any) -> VideoConfig:
    return VideoConfig(**{"source": "file", "width": 320, "height": 240, "fps": 30, **values})


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "clip.mkv")  # 1 s at 10 fps, mpeg4


def test_loops_through_the_file_in_order(clip: Path) -> None:
    source = FileSource(video(file=str(clip)))
    source.open()
    sink = Sink()
    source.start(sink)
    try:
        numbers = sink.wait(25, timeout=15)
    finally:
        source.stop()
    assert not source.running and source.error is None
    assert numbers[:25] == [n % 10 for n in range(25)]  # every frame, in order, wrapping around
    assert sink.sizes == {(320, 240)}
    info = source.describe()
    assert info["file"] == str(clip) and info["loops"] >= 2
    assert (info["width"], info["height"], info["fps"]) == (320, 240, 10)


def test_paced_at_the_files_own_rate(clip: Path) -> None:
    # video.fps says 30; the file is 10 fps and plays at 10 fps
    source = FileSource(video(file=str(clip), fps=30))
    source.open()
    sink = Sink()
    source.start(sink)
    try:
        time.sleep(2.0)
    finally:
        source.stop()
    assert 10 <= len(sink.numbers) <= 30, len(sink.numbers)
    gaps = [b - a for a, b in zip(sink.times, sink.times[1:])]
    assert max(gaps) < 0.5  # no long hole at the loop point either


def test_stop_is_prompt_and_close_idempotent(tmp_path: Path) -> None:
    slow = write_clip(tmp_path / "slow.mkv", frames=3, fps=1)  # one frame a second
    source = FileSource(video(file=str(slow)))
    source.open()
    sink = Sink()
    source.start(sink)
    sink.wait(1)
    started = time.monotonic()
    source.stop()
    assert time.monotonic() - started < 1.0
    assert not source.running
    source.close()
    source.stop()


def test_falling_behind_skips_ahead_instead_of_bursting(clip: Path) -> None:
    # the consumer stalls for 0.6 s once; afterwards frames come at the file's pace again
    source = FileSource(video(file=str(clip)))
    source.open()
    sink = Sink()
    original = sink.on_frame

    def stalling(frame: av.VideoFrame) -> None:
        original(frame)
        if len(sink.numbers) == 3:
            time.sleep(0.6)

    sink.on_frame = stalling  # type: ignore[method-assign]
    source.start(sink)
    try:
        sink.wait(10, timeout=10)
    finally:
        source.stop()
    gaps = [b - a for a, b in zip(sink.times[3:], sink.times[4:10])]
    assert all(gap > 0.04 for gap in gaps), gaps  # 10 fps: ~0.1 s apart, not a catch-up burst
    assert source.frames_late >= 1


def test_h264_mp4_plays(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", frames=12, codec="libx264", options={"preset": "ultrafast"})
    source = FileSource(video(file=str(clip)))
    source.open()
    sink = Sink()
    source.start(sink)
    try:
        numbers = sink.wait(14, timeout=10)
    finally:
        source.stop()
    assert numbers[:14] == [n % 12 for n in range(14)]


# --- errors ------------------------------------------------------------------------------------


def open_error(config: VideoConfig) -> str:
    source = FileSource(config)
    with pytest.raises(SourceError) as caught:
        source.open()
    assert source._container is None  # nothing left open
    return str(caught.value)


def test_file_is_required() -> None:
    assert open_error(video(file="")) == "video.file: required when video.source is file"


def test_missing_file(tmp_path: Path) -> None:
    message = open_error(video(file=str(tmp_path / "nope.mp4")))
    assert message.startswith("video.file:") and "does not exist" in message


def test_directory(tmp_path: Path) -> None:
    message = open_error(video(file=str(tmp_path)))
    assert message.startswith("video.file:") and "directory" in message


def test_not_a_video_file(tmp_path: Path) -> None:
    junk = tmp_path / "notes.mp4"
    junk.write_text("this is not a video\n" * 50)
    message = open_error(video(file=str(junk)))
    assert message.startswith("video.file:") and str(junk) in message


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clip: Path) -> None:
    # the tests may run as root, for whom chmod 000 changes nothing: fail as FFmpeg would
    def denied(*args: Any, **kwargs: Any) -> Any:
        raise av.error.PermissionError(errno.EACCES, "Permission denied", str(clip))

    monkeypatch.setattr(av, "open", denied)
    message = open_error(video(file=str(clip)))
    assert message == f"video.file: {clip} is not readable: permission denied"


def test_no_video_stream(tmp_path: Path) -> None:
    sound = tmp_path / "sound.wav"
    with av.open(str(sound), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame(format="s16", layout="mono", samples=800)
        frame.planes[0].update(bytes(1600))
        frame.sample_rate, frame.pts = 8000, 0
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    message = open_error(video(file=str(sound)))
    assert message == f"video.file: {sound} has no video stream (streams: audio)"


def test_no_frames(tmp_path: Path) -> None:
    empty = write_clip(tmp_path / "empty.mkv", frames=0)
    message = open_error(video(file=str(empty)))
    assert message.startswith(f"video.file: {empty}: no video frame could be decoded")


def test_undecodable_frames(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.avi"
    with av.open(str(garbage), "w") as out:
        stream = out.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuvj420p"
        out.start_encoding()
        for i in range(5):
            packet = av.Packet(b"\x00not a jpeg at all" * 20)
            packet.stream, packet.pts, packet.dts = stream, i, i
            packet.time_base = Fraction(1, 10)
            out.mux(packet)
    message = open_error(video(file=str(garbage)))
    assert message.startswith(f"video.file: {garbage}: no video frame could be decoded")


def test_a_pass_without_frames_raises_instead_of_spinning(clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = FileSource(video(file=str(clip)))
    source.open()
    monkeypatch.setattr(source, "_frames", lambda: iter(()))
    sink = Sink()
    source.start(sink)
    deadline = time.monotonic() + 5
    while source.running and time.monotonic() < deadline:
        time.sleep(0.02)
    source.stop()
    assert isinstance(source.error, SourceError)
    assert str(source.error).startswith("video.file:")


# --- end to end ----------------------------------------------------------------------------------


async def test_viewer_receives_the_files_frames(robot_factory: Any, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mkv", frames=20, fps=20, width=320, height=240)
    config = make_config(video={"source": "file", "file": str(clip), "width": 320, "height": 240, "fps": 20})
    robot = await robot_factory(config, source_factory=lambda video: (FileSource(video), "test"))
    viewer = Viewer()
    try:
        await viewer.connect(robot.post_offer)
        numbers = await viewer.wait_frames(30, timeout=30)
    finally:
        await viewer.close()
    decoded = [n for n in numbers if n is not None]
    assert len(decoded) >= 20
    assert set(decoded) <= set(range(20))  # every picture is one of the file's
    assert len(set(decoded)) >= 10
    assert viewer.sizes == {(320, 240)}

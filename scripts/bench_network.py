#!/usr/bin/env python3
"""Network benchmark: robotcam next to aiortc's webcam example when one viewer's link is weak.

Three headless Chromium viewers watch the server, each behind a veth pair from the server's
network namespace into a namespace of their own: one link (the "shaped" viewer's) is shaped
with `tc` on the server's side, i.e. what the server sends to that viewer; the other (two
"unshaped" viewers, one Chromium) never is. This kernel has no netem: a tbf caps the rate, an
htb with a blackhole class chosen by a BPF classifier drops a random share (tests/netns_support).
Scenarios, each with a fresh server and fresh pages:

  unshaped     nothing shaped
  capped       the shaped viewer capped at a third of the stream's bitrate
  lossy        3 % of the packets to the shaped viewer dropped at random
  cap-lifted   capped as above for --capped-for seconds, then unshaped for --after-lift

Servers, alternately (each scenario runs both, in turns that swap who goes first):

  robotcam        `python -m robotcam run` with the clip as its file source: one encoder per
                  rung of the rendition ladder in use, the same packets for every viewer on a
                  rung; the default ladder (video.renditions).
  aiortc-example  scripts/bench_baseline.py --file: webcam.py's way, the clip through aiortc's
                  MediaPlayer, MediaRelay, one aiortc encoder per viewer following its REMB;
                  the codec is what Chromium prefers (VP8), as with webcam.py (--baseline-codec
                  video/H264 to force H.264).

Content: a generated clip of noise over a moving gradient (camera-like for rate control: the
encoder cannot shrink it below its bitrate; the test pattern compresses to almost nothing),
640x480 at 30 fps, encoded by robotcam at --bitrate (1 Mbit/s).

Measured per viewer, over the scenario (from when the shaping starts to its end), from every
frame the page presents (requestVideoFrameCallback) and its inbound-rtp byte count:

  fps            frames presented per second
  freeze         total and longest time in gaps longer than max(3 frame intervals, 150 ms), the
                 interval being that of the rung the viewer is on (the stream's otherwise); the
                 scenario's edges count as frames, so a picture frozen at the end counts
  kbit/s         received bitrate (RTP payload and headers, reconnects summed)
  rung           robotcam: the rung the viewer spent most of the time on, its share, and how
                 many moves it made (from /health, twice a second)
  recovered      cap-lifted only: seconds from the lift until the viewer shows the full-size
                 picture at 80 % of the frame rate and 80 % of the unshaped viewers' bitrate
                 over a 2 s window
and per run the server process's CPU (user + system, all threads, psutil) in cores, next to the
whole machine's busy cores (the machine may be shared).

    scripts/bench_network.py                  # about 10 minutes: 4 scenarios x 2 servers
    scripts/bench_network.py --smoke          # 5 s scenarios: does it all work (about 2 minutes)
    scripts/bench_network.py --scenarios capped,cap-lifted --rounds 2

Needs root, Debian's chromium, iproute2 (ip, tc), util-linux (unshare, nsenter) and the test
extras (scripts/bootstrap.sh --test). Started outside a network namespace of its own, it runs
itself again inside `unshare --net` (only `lo`, brought up), so no packet leaves the machine; the
child namespaces, veth pairs and processes it makes are removed at the end, on errors and on
Ctrl-C. Prints a Markdown table; server logs and each run's raw record (every frame each page
presented, its byte counts, and robotcam's /health view of it, as JSON) stay in the directory it names.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

SERVERS = ("robotcam", "aiortc-example")
SCENARIOS = ("unshaped", "capped", "lossy", "cap-lifted")
LOSS = 0.03
FIRST_FRAMES_TIMEOUT = 30.0  # s for a page to present its first frames
POLL = 0.5  # s between /health samples
RECOVERY_WINDOW = 2.0  # s a recovered viewer must hold full size, frame rate and bitrate
REEXEC_MARK = "ROBOTCAM_BENCH_NETNS"

# Bytes of video received, summed over the page's connections (a reconnect starts at 0 again).
JS_RECORD_BYTES = """() => {
    window.__bytes = [];
    let pc = null, last = 0, total = 0;
    setInterval(async () => {
        const current = (window.robotcam && window.robotcam.pc) || window.pc;
        if (!current) return;
        if (current !== pc) { pc = current; last = 0; }
        let bytes = null;
        (await current.getStats()).forEach((s) => {
            if (s.type === 'inbound-rtp' && s.kind === 'video') bytes = s.bytesReceived;
        });
        if (bytes === null) return;
        total += Math.max(0, bytes - last);
        last = bytes;
        window.__bytes.push([Date.now() / 1000, total]);
    }, 500);
}"""

JS_SUMMARY = """async () => {
    const pc = (window.robotcam && window.robotcam.pc) || window.pc;
    let codec = null;
    if (pc) {
        const report = await pc.getStats();
        report.forEach((s) => {
            if (s.type === 'inbound-rtp' && s.kind === 'video' && s.codecId) codec = report.get(s.codecId).mimeType;
        });
    }
    return {frames: window.__frames, bytes: window.__bytes, codec, state: pc ? pc.connectionState : null,
            reconnects: window.robotcam ? window.robotcam.reconnects : 0};
}"""


# --- what one run measures ----------------------------------------------------------------------


@dataclass
class Viewer:
    """One page's record of a run."""

    label: str
    frames: list[tuple[float, int]]  # (wall time, width) of every presented frame
    bytes: list[tuple[float, float]]  # (wall time, bytes received so far)
    codec: str | None = None
    reconnects: int = 0
    state: str | None = None  # the page's connection at the end: "connected", or how it ended
    # robotcam: (wall time, this viewer's session in /health: rung, moves, link), twice a second
    sessions: list[tuple[float, dict[str, Any]]] = field(default_factory=list)


@dataclass
class Run:
    scenario: str
    server: str
    start: float
    end: float
    lifted: float | None
    viewers: list[Viewer]
    cpu_cores: float
    machine_cores: float
    encoders: int | None = None  # robotcam: the most encoders running at once


def received_at(samples: list[tuple[float, float]], when: float) -> float:
    """Bytes received by `when`, interpolated between the page's samples."""
    before = [s for s in samples if s[0] <= when]
    after = [s for s in samples if s[0] > when]
    if not before:
        return after[0][1] if after else 0.0
    if not after:
        return before[-1][1]
    (t0, b0), (t1, b1) = before[-1], after[0]
    return b0 + (b1 - b0) * (when - t0) / (t1 - t0)


def kbps(viewer: Viewer, start: float, end: float) -> float:
    return (received_at(viewer.bytes, end) - received_at(viewer.bytes, start)) * 8 / 1000 / (end - start)


def rung_at(viewer: Viewer, when: float) -> int:
    """The rung sampled last before `when` (0 without samples: the full stream)."""
    earlier = [session.get("rung", 0) for t, session in viewer.sessions if t <= when]
    return earlier[-1] if earlier else 0


def freezes(viewer: Viewer, start: float, end: float, fps_of: Callable[[int], float]) -> list[float]:
    """The gaps between presented frames (and the window's edges) longer than max(3 frame
    intervals, 150 ms) of the rung the viewer was on."""
    times = [start, *(t for t, _ in viewer.frames if start <= t <= end), end]
    gaps = []
    for a, b in zip(times, times[1:]):
        if b - a > max(3 / fps_of(rung_at(viewer, a)), 0.15):
            gaps.append(b - a)
    return gaps


def recovered_after(viewer: Viewer, lifted: float, end: float, full: tuple[int, float], reference_kbps: float) -> float | None:
    """Seconds from the lift to the first RECOVERY_WINDOW in which the viewer shows the full
    width at 80 % of the frame rate and 80 % of the reference bitrate; None if it never does."""
    width, fps = full
    t = lifted
    while t + RECOVERY_WINDOW <= end:
        shown = [w for when, w in viewer.frames if t <= when < t + RECOVERY_WINDOW]
        if (len(shown) >= 0.8 * fps * RECOVERY_WINDOW and all(w == width for w in shown)
                and kbps(viewer, t, t + RECOVERY_WINDOW) >= 0.8 * reference_kbps):
            return t - lifted
        t += 0.25
    return None


def rung_summary(viewer: Viewer) -> str:
    if not viewer.sessions:
        return "-"
    rungs = [session.get("rung", 0) for _, session in viewer.sessions]
    mode = statistics.multimode(rungs)[0]
    share = rungs.count(mode) / len(rungs)
    moves = viewer.sessions[-1][1].get("rendition_moves", 0) - viewer.sessions[0][1].get("rendition_moves", 0)
    return f"{mode} ({share:.0%}), {moves} move{'s' if moves != 1 else ''}"


# --- the servers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """What every run shares: the clip, the stream, where the viewers are, where logs go."""

    clip: Path
    width: int
    height: int
    fps: float
    bitrate: int
    addresses: tuple[str, ...]  # the server's ends of the veth pairs
    workdir: Path
    baseline_codec: str | None

    def robotcam_config(self, port: int) -> dict[str, Any]:
        return {
            "server": {"host": "0.0.0.0", "port": port},
            "video": {"source": "file", "file": str(self.clip), "width": self.width, "height": self.height,
                      "fps": self.fps, "bitrate": self.bitrate},
            "webrtc": {"host_addresses": list(self.addresses), "ice_servers": []},
            "audio": {"source": "none"},
            "talkback": {"enabled": False},
            "auth": {"enabled": False},  # /health then lists each viewer's rung
            "logging": {"level": "info"},
        }

    def command(self, server: str, port: int) -> list[str]:
        if server == "robotcam":
            config = self.workdir / f"robotcam-{port}.yaml"
            config.write_text(json.dumps(self.robotcam_config(port)))  # JSON is YAML
            return [sys.executable, "-m", "robotcam", "run", "--config", str(config)]
        ice = [arg for address in self.addresses for arg in ("--ice-address", address)]
        codec = ["--codec", self.baseline_codec] if self.baseline_codec else []
        return [sys.executable, str(HERE / "bench_baseline.py"), "--host", "0.0.0.0", "--port", str(port),
                "--file", str(self.clip), *ice, *codec]

    def rung_fps(self) -> Callable[[int], float]:
        """Frame rate of each rung of robotcam's default ladder for this stream."""
        from robotcam.config import Config
        from robotcam.video.rungs import ladder

        rungs = ladder(Config.model_validate(self.robotcam_config(1)).video)
        return lambda index: rungs[min(index, len(rungs) - 1)].fps


@contextlib.contextmanager
def server_process(setup: Setup, server: str, log: Path) -> Iterator[tuple[subprocess.Popen[Any], int]]:
    """The server running and healthy, and its port; stopped afterwards."""
    from scripts.bench import die_with_parent, free_port, stop_process, wait_healthy

    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(setup.command(server, port), cwd=HERE.parent, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=die_with_parent, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc, timeout=30)
        yield proc, port
    finally:
        stop_process(proc)


def health(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(base + "/health", timeout=2) as response:
        return json.loads(response.read())


# --- one run ---------------------------------------------------------------------------------


@dataclass
class Viewers:
    """The Chromium behind the shaped link and the one behind the unshaped link."""

    shaped: Any  # playwright Browser
    unshaped: Any
    shaped_link: Any  # tests.netns_support.ShapedLink
    unshaped_link: Any


def open_page(browser: Any, url: str) -> Any:
    """A page of its own context, recording frames and bytes from the start, once it shows
    its first frames (bounded)."""
    from tests.netns_support import JS_RECORD_FRAMES

    context = browser.new_context(permissions=["camera", "microphone"])
    page = context.new_page()
    page.goto(url)
    page.evaluate(JS_RECORD_FRAMES)
    page.evaluate(JS_RECORD_BYTES)
    page.wait_for_function("() => window.__frames.length >= 5", timeout=FIRST_FRAMES_TIMEOUT * 1000, polling=250)
    return page


def session_ids(base: str) -> set[int]:
    return {s["id"] for s in health(base)["peers"]["sessions"]}


def shape(link: Any, scenario: str, cap: str) -> None:
    if scenario in ("capped", "cap-lifted"):
        link.cap(cap)
    elif scenario == "lossy":
        link.lose(LOSS)


@dataclass
class Sampler:
    """Twice a second during a robotcam run: each viewer's session (rung, link) and the
    encoders running."""

    base: str
    ids: list[int]  # session id of each page, in page order
    sessions: list[list[tuple[float, dict[str, Any]]]] = field(default_factory=list)
    encoders: int = 0

    def sample(self) -> None:
        try:
            body = health(self.base)
        except OSError:  # a slow answer on a busy machine: a sample missed, not a failed run
            return
        by_id = {s["id"]: s for s in body["peers"]["sessions"]}
        now = time.time()
        self.sessions = self.sessions or [[] for _ in self.ids]
        for index, sid in enumerate(self.ids):
            if sid in by_id:
                self.sessions[index].append((now, by_id[sid]))
        self.encoders = max(self.encoders, len(body["video"]["encoders"]))


def run_once(setup: Setup, viewers: Viewers, server: str, scenario: str, args: argparse.Namespace) -> Run:
    import psutil

    from scripts.bench import cpu_seconds, host_busy_seconds

    log = setup.workdir / f"{scenario}-{server}-{time.strftime('%H%M%S')}.log"
    links = (viewers.shaped_link, viewers.unshaped_link, viewers.unshaped_link)
    browsers = (viewers.shaped, viewers.unshaped, viewers.unshaped)
    labels = ("shaped", "unshaped 1", "unshaped 2")
    with server_process(setup, server, log) as (proc, port):
        base = f"http://127.0.0.1:{port}"
        pages, ids = [], []
        try:
            for browser, link in zip(browsers, links):  # one at a time: each new session is its page's
                before = session_ids(base) if server == "robotcam" else set()
                pages.append(open_page(browser, f"http://{link.server}:{port}/"))
                new = sorted(session_ids(base) - before) if server == "robotcam" else []
                ids.append(new[0] if new else -1)
            time.sleep(args.settle)
            sampler = Sampler(base, ids)
            duration = args.capped_for + args.after_lift if scenario == "cap-lifted" else args.seconds
            process = psutil.Process(proc.pid)
            cpu0, machine0, start = cpu_seconds(process), host_busy_seconds(), time.time()
            lifted = None
            try:
                shape(viewers.shaped_link, scenario, args.cap)
                while time.time() < start + duration:
                    if scenario == "cap-lifted" and lifted is None and time.time() >= start + args.capped_for:
                        viewers.shaped_link.lift()
                        lifted = time.time()
                    if server == "robotcam":
                        sampler.sample()
                    time.sleep(POLL)
            finally:
                viewers.shaped_link.lift()
            end = time.time()
            cpu = (cpu_seconds(process) - cpu0) / (end - start)
            machine = (host_busy_seconds() - machine0) / (end - start)
            summaries = [page.evaluate(JS_SUMMARY) for page in pages]
        finally:
            for page in pages:
                page.context.close()
    records = []
    for index, (label, summary) in enumerate(zip(labels, summaries)):
        records.append(Viewer(label, [tuple(f) for f in summary["frames"]], [tuple(b) for b in summary["bytes"]],
                              summary["codec"], summary["reconnects"], summary["state"],
                              sampler.sessions[index] if sampler.sessions else []))
    return Run(scenario, server, start, end, lifted, records, cpu, machine,
               sampler.encoders if server == "robotcam" else None)


# --- the report ------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1, missing: str = "-") -> str:
    return missing if value is None else f"{value:.{digits}f}"


def viewer_rows(run: Run, setup: Setup) -> list[str]:
    fps_of = setup.rung_fps() if run.server == "robotcam" else (lambda _: setup.fps)
    span = run.end - run.start
    reference = None
    if run.lifted is not None:
        reference = statistics.mean(kbps(v, run.lifted, run.end) for v in run.viewers[1:])
    rows = []
    for viewer in run.viewers:
        gaps = freezes(viewer, run.start, run.end, fps_of)
        shown = sum(1 for t, _ in viewer.frames if run.start <= t <= run.end)
        recovered = "-"
        if run.lifted is not None and viewer.label == "shaped" and reference:
            after = recovered_after(viewer, run.lifted, run.end, (setup.width, setup.fps), reference)
            recovered = fmt(after) if after is not None else f"> {run.end - run.lifted:.0f}"
        rows.append(
            f"| {run.scenario} | {run.server} | {viewer.label} | {shown / span:.1f} | {sum(gaps):.2f} | "
            f"{max(gaps, default=0.0):.2f} | {kbps(viewer, run.start, run.end):.0f} | {rung_summary(viewer)} | {recovered} |"
        )
    return rows


def cpu_row(run: Run) -> str:
    codecs = sorted({v.codec.split("/")[-1] for v in run.viewers if v.codec})
    encoders = run.encoders if run.encoders is not None else len(run.viewers)
    return (f"| {run.scenario} | {run.server} | {', '.join(codecs) or '-'} | {encoders} | "
            f"{run.cpu_cores:.2f} | {run.machine_cores:.2f} |")


def notes(runs: list[Run]) -> list[str]:
    """Connections that ended or were made again during a run (the freeze figures include them)."""
    lines = []
    for run in runs:
        for viewer in run.viewers:
            where = f"- {run.scenario}, {run.server}, {viewer.label}:"
            if viewer.state != "connected":
                last = max((t for t, _ in viewer.frames), default=run.start)
                lines.append(f"{where} its connection was {viewer.state} at the end "
                             f"(last frame {last - run.start:.0f} s into the scenario)")
            if viewer.reconnects:
                lines.append(f"{where} the page reconnected {viewer.reconnects}x")
    return lines


def report(runs: list[Run], failures: list[str], setup: Setup, args: argparse.Namespace, command: str,
           elapsed: float) -> str:
    lines = [
        f"Network benchmark, {datetime.date.today().isoformat()}, {machine()}, `{command}` ({elapsed / 60:.0f} min)",
        f"{setup.width}x{setup.height} at {setup.fps:g} fps, robotcam at {setup.bitrate // 1000} kbit/s; cap {args.cap}, "
        f"loss {LOSS:.0%}; 3 Chromium viewers, 1 shaped; scenarios of {args.seconds:g} s "
        f"(cap-lifted: {args.capped_for:g} + {args.after_lift:g} s) after {args.settle:g} s of settling",
        "",
        "| scenario | server | viewer | fps | freeze total s | longest freeze s | kbit/s | rung | recovered after s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *(row for run in runs for row in viewer_rows(run, setup)),
        "",
        "| scenario | server | codec | encoders | server CPU (cores) | machine busy (cores) |",
        "| --- | --- | --- | --- | --- | --- |",
        *(cpu_row(run) for run in runs),
        "",
        *notes(runs),
        *(f"- failed: {failure}" for failure in failures),
        f"Logs: {setup.workdir}",
    ]
    return "\n".join(lines)


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} cores{', ' + model if model else ''}"


# --- setting up ------------------------------------------------------------------------------


def isolated() -> bool:
    """Whether this network namespace has nothing but `lo` (ours to shape and fill)."""
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    return {line.split(":", 1)[0].strip() for line in lines} <= {"lo"}


def venv_python() -> str:
    """The checkout's .venv (scripts/bootstrap.sh --test) if there is one, else this Python."""
    venv = HERE.parent / ".venv"
    return str(venv / "bin" / "python") if (venv / "bin" / "python").exists() else sys.executable


def reexec(argv: list[str], isolate: bool) -> None:
    """Run this script again with the checkout's Python, and inside a new network namespace
    with only `lo` (up) when `isolate`."""
    os.environ[REEXEC_MARK] = "1"
    command = [venv_python(), str(Path(__file__).resolve()), *argv]
    if isolate:
        command = ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', *command]
    os.execvp(command[0], command)


def missing_requirements() -> list[str]:
    """What this machine lacks (checked before anything runs, the checkout's Python or not)."""
    problems = [] if os.geteuid() == 0 else ["root (network namespaces, tc)"]
    problems += [tool for tool in ("ip", "tc", "nsenter", "unshare") if not shutil.which(tool)]
    return problems + ([] if Path("/usr/bin/chromium").exists() else ["/usr/bin/chromium (Debian's chromium)"])


def names_from(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list of some of `allowed`."""
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        if not names or any(n not in allowed for n in names):
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} (got {text!r})")
        return names
    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", type=names_from(SCENARIOS), default=list(SCENARIOS), metavar="NAME,...",
                        help=f"from {','.join(SCENARIOS)} (default: all)")
    parser.add_argument("--servers", type=names_from(SERVERS), default=list(SERVERS), metavar="NAME,...",
                        help=f"from {','.join(SERVERS)} (default: both)")
    parser.add_argument("--rounds", type=int, default=1, help="times to run every scenario (default: 1)")
    parser.add_argument("--seconds", type=float, default=45.0, help="length of a scenario (default: 45)")
    parser.add_argument("--capped-for", type=float, default=30.0, help="cap-lifted: seconds capped (default: 30)")
    parser.add_argument("--after-lift", type=float, default=25.0, help="cap-lifted: seconds after the lift (default: 25)")
    parser.add_argument("--settle", type=float, default=8.0,
                        help="seconds between the last viewer's first frames and the scenario (default: 8)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--bitrate", type=int, default=1_000_000, help="robotcam's bitrate, bit/s (default: 1000000)")
    parser.add_argument("--cap", help="the shaped viewer's cap, as tc says it (default: a third of --bitrate)")
    parser.add_argument("--baseline-codec", metavar="MIME",
                        help="make the aiortc example answer with this codec only, e.g. video/H264 (default: as negotiated)")
    parser.add_argument("--smoke", action="store_true",
                        help="5 s scenarios, 2 s settling: checks that everything runs, measures nothing worth keeping")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.capped_for, args.after_lift, args.settle = 5.0, 5.0, 5.0, 2.0
    args.cap = args.cap or f"{args.bitrate // 3000}kbit"
    if args.rounds < 1 or min(args.seconds, args.capped_for, args.after_lift) <= RECOVERY_WINDOW or args.settle < 0:
        parser.error(f"--rounds must be >= 1, scenario lengths > {RECOVERY_WINDOW:g} s, --settle >= 0")
    return args


def schedule(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """(scenario, server) in the order to run them: the servers swap who goes first each time."""
    turn = 0
    for _ in range(args.rounds):
        for scenario in args.scenarios:
            order = args.servers if turn % 2 == 0 else list(reversed(args.servers))
            turn += 1
            for server in order:
                yield scenario, server


def lifetime(args: argparse.Namespace) -> float:
    """A generous bound on the whole run, for the child namespaces' holders."""
    per_run = max(args.seconds, args.capped_for + args.after_lift) + args.settle + 3 * FIRST_FRAMES_TIMEOUT + 60
    return per_run * args.rounds * len(args.scenarios) * len(args.servers) + 600


def close_quietly(browser: Any) -> None:
    """Close a browser that may be gone already: Ctrl-C reaches Playwright's driver too (it
    shares our process group)."""
    with contextlib.suppress(Exception):
        browser.close()


def benchmark(args: argparse.Namespace, workdir: Path, runs: list[Run], failures: list[str]) -> Setup:
    """Every scheduled run, each appended to `runs` (or its error to `failures`) as it ends;
    Ctrl-C ends the loop, keeping what was done. What it set up goes away in any case."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    from tests.netns_support import ShapedLink, browser_behind, noise_clip

    with contextlib.ExitStack() as stack:
        shaped = ShapedLink("127.0.1.1", "127.0.1.2", "s", lifetime(args))
        stack.callback(shaped.close)
        unshaped = ShapedLink("127.0.2.1", "127.0.2.2", "u", lifetime(args))
        stack.callback(unshaped.close)
        print("[bench] making the clip...", file=sys.stderr, flush=True)
        clip = noise_clip(workdir / "noise.mp4", 3.0, round(args.fps), args.width, args.height)
        setup = Setup(clip, args.width, args.height, args.fps, args.bitrate, (shaped.server, unshaped.server),
                      workdir, args.baseline_codec)
        playwright = stack.enter_context(sync_playwright())
        viewers = Viewers(browser_behind(shaped, playwright, workdir), browser_behind(unshaped, playwright, workdir),
                          shaped, unshaped)
        for browser in (viewers.shaped, viewers.unshaped):
            stack.callback(close_quietly, browser)
        try:
            for scenario, server in schedule(args):
                print(f"[bench] {scenario}: {server}...", file=sys.stderr, flush=True)
                try:
                    run = run_once(setup, viewers, server, scenario, args)
                except (PlaywrightTimeout, RuntimeError, OSError) as exc:  # this run failed, not the bench
                    failures.append(f"{scenario}, {server}: {type(exc).__name__}: {exc}".splitlines()[0])
                    print(f"[bench]   failed: {failures[-1]}", file=sys.stderr, flush=True)
                    continue
                runs.append(run)
                raw = workdir / f"{len(runs):02d}-{scenario}-{server}.json"
                raw.write_text(json.dumps(dataclasses.asdict(run)))  # every frame, for a closer look
                for row in viewer_rows(run, setup):
                    print(f"[bench]   {row}", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            print("[bench] interrupted: reporting the runs done", file=sys.stderr, flush=True)
        except Exception as exc:  # noqa: BLE001 - the browsers are gone (Ctrl-C): report what was done
            failures.append(f"stopped: {type(exc).__name__}: {exc}".splitlines()[0])
            print(f"[bench] {failures[-1]}", file=sys.stderr, flush=True)
    return setup


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    problems = missing_requirements()
    if problems:
        print(f"bench_network.py needs {', '.join(problems)}", file=sys.stderr)
        return 2
    if not os.environ.get(REEXEC_MARK) and (not isolated() or venv_python() != sys.executable):
        reexec(argv, isolate=not isolated())
    if not isolated():
        print("bench_network.py: the new network namespace has interfaces besides lo", file=sys.stderr)
        return 2

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    command = shlex.join(["scripts/bench_network.py", *argv])
    workdir = Path(tempfile.mkdtemp(prefix="robotcam-bench-network-"))
    started = time.monotonic()
    runs: list[Run] = []
    failures: list[str] = []
    try:
        setup = benchmark(args, workdir, runs, failures)
    except KeyboardInterrupt:
        print(f"[bench] interrupted while setting up; logs in {workdir}", file=sys.stderr)
        return 130
    print(report(runs, failures, setup, args, command, time.monotonic() - started))
    return 0 if len(runs) == sum(1 for _ in schedule(args)) else 1


if __name__ == "__main__":
    sys.exit(main())

"""`robotcam run | check-config | config | --version`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from robotcam import __version__
from robotcam.config import ConfigError, default_path, dump_yaml, load_config

log = logging.getLogger("robotcam")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robotcam",
        description="Stream the robot's camera to every browser on the network over WebRTC.",
    )
    parser.add_argument("--version", action="version", version=f"robotcam {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="run the streaming daemon")
    run.add_argument(
        "--config", type=Path, metavar="PATH",
        help="YAML config (default: /etc/robotcam.yaml if it exists, else built-in defaults)",
    )
    check = commands.add_parser("check-config", help="validate a config file; exit 1 on problems")
    check.add_argument("path", type=Path, metavar="PATH")
    show = commands.add_parser("config", help="print the effective config as YAML, secrets masked")
    show.add_argument("--config", type=Path, metavar="PATH")
    return parser


def _resolve(path: Path | None) -> Path | None:
    return path if path is not None else default_path()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 2

    if args.command == "check-config":
        try:
            load_config(args.path)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"{args.path}: OK")
        return 0

    path = _resolve(args.config)
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"robotcam: invalid configuration. {exc}", file=sys.stderr)
        return 1

    if args.command == "config":
        sys.stdout.write(dump_yaml(config))
        return 0

    # run: imported here so check-config and config stay fast and need no media libraries
    from robotcam.logs import setup_logging
    from robotcam.service import run_service

    setup_logging(config.logging.level)
    log.info(
        "robotcam %s starting with %s", __version__,
        path if path is not None else "built-in defaults (no /etc/robotcam.yaml)",
    )
    try:
        return run_service(config, path)
    except KeyboardInterrupt:
        return 0

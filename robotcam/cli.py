"""`robotcam run | check-config | config | gen-cert | hash-password | new-token |
reset-password | --version`."""

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
    _add_gen_cert(commands)
    commands.add_parser(
        "hash-password",
        help="read a password from standard input (no echo on a terminal), print its argon2id hash",
        description="Print the password_hash for an auth.users entry. On a terminal it asks "
        "twice without echo; otherwise it reads the first line of standard input.",
    )
    token = commands.add_parser(
        "new-token", help="print a new random bearer token and the auth.tokens line to paste",
    )
    token.add_argument("--name", default="player", help="the token's name in logs (default: player)")
    token.add_argument("--permissions", default="view", metavar="LIST",
                       help="comma-separated: view, talk, control, admin (default: view)")
    reset = commands.add_parser(
        "reset-password",
        help="give the first-run admin a new random password and print it",
        description="For the admin robotcam made at first start (no auth.users configured). "
        "Then: sudo systemctl reload robotcam. Users in the config change their "
        "password_hash there instead.",
    )
    reset.add_argument("--config", type=Path, metavar="PATH")
    reset.add_argument("--state-dir", type=Path, metavar="DIR",
                       help="default: auth.state_directory, $STATE_DIRECTORY, /var/lib/robotcam")
    return parser


def _hash_password() -> int:
    import getpass

    from argon2 import PasswordHasher

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("robotcam hash-password: the two passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("robotcam hash-password: empty password", file=sys.stderr)
        return 1
    print(PasswordHasher().hash(password))
    return 0


def _new_token(args: argparse.Namespace) -> int:
    import json

    from robotcam.auth.credentials import hash_token, new_token
    from robotcam.config import AuthConfig, TokenEntry

    from robotcam.auth.identity import PERMISSIONS

    permissions = [p.strip() for p in args.permissions.split(",") if p.strip()]
    unknown = [p for p in permissions if p not in PERMISSIONS]
    if unknown or not permissions:
        print(f"robotcam new-token: --permissions {args.permissions!r}: use some of "
              f"{', '.join(PERMISSIONS)}", file=sys.stderr)
        return 1
    token = new_token()
    try:  # the same checks the config gets
        entry = TokenEntry(name=args.name, sha256=hash_token(token), permissions=permissions)
        AuthConfig(tokens=[entry])
    except ValueError as exc:
        print(f"robotcam new-token: {exc}", file=sys.stderr)
        return 1
    print(f"token: {token}")
    print("Give the token to the player or program (Authorization: Bearer <token>); it is not kept.")
    print("Add this under auth.tokens in /etc/robotcam.yaml, then: sudo systemctl reload robotcam\n")
    print(f"    - {{name: {entry.name}, sha256: \"{entry.sha256}\", permissions: {json.dumps(entry.permissions)}}}")
    return 0


def _reset_password(args: argparse.Namespace) -> int:
    from robotcam.auth.credentials import ADMIN_NAME, reset_admin_password, state_directory

    try:
        config = load_config(_resolve(args.config))
    except ConfigError as exc:
        print(f"robotcam: invalid configuration. {exc}", file=sys.stderr)
        return 1
    if config.auth.users:
        print("robotcam reset-password: auth.users is set, so the first-run admin is not used; "
              "change password_hash there (robotcam hash-password)", file=sys.stderr)
        return 1
    folder = args.state_dir or state_directory(config.auth)
    try:
        password = reset_admin_password(folder)
    except OSError as exc:
        print(f"robotcam reset-password: cannot write in {folder}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"user:     {ADMIN_NAME}\npassword: {password}")
    print("Now: sudo systemctl reload robotcam (signed-in admin sessions end).")
    return 0


def _add_gen_cert(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from robotcam.service.tls import DEFAULT_DIR, LEAF_DAYS

    gen = commands.add_parser(
        "gen-cert",
        help="make an HTTPS certificate for this robot (and the CA phones install to trust it)",
        description="Make a certificate for HTTPS (needed for the talk button on phones), "
        "signed by a small CA of this robot's own: install that CA (ca.crt) once on each "
        "phone or computer. Re-running with --force renews the certificate with the same CA.",
    )
    gen.add_argument("--out-dir", type=Path, default=DEFAULT_DIR, metavar="DIR",
                     help=f"where to write ca.crt, ca.key, cert.pem, key.pem (default: {DEFAULT_DIR})")
    gen.add_argument("--hostname", metavar="NAME",
                     help="the robot's host name (default: this machine's); NAME.local is added")
    gen.add_argument("--ip", action="append", default=None, metavar="ADDRESS",
                     help="an address viewers use (repeatable; default: this machine's addresses); "
                     "127.0.0.1 and ::1 are always added")
    gen.add_argument("--days", type=int, default=LEAF_DAYS, metavar="N",
                     help=f"validity of the server certificate (default: {LEAF_DAYS}, the most "
                     "iPhones accept; the CA is valid for 10 years)")
    gen.add_argument("--force", action="store_true",
                     help="replace an existing certificate (the CA is kept when it still fits)")


def _gen_cert(args: argparse.Namespace) -> int:
    from robotcam.service.tls import LEAF_DAYS, TLSError, default_hostname, default_ips, generate

    hostname = args.hostname or default_hostname()
    ips = args.ip if args.ip is not None else default_ips()
    try:
        issued = generate(args.out_dir, hostname, ips, days=args.days, force=args.force)
    except TLSError as exc:
        print(f"robotcam gen-cert: {exc}", file=sys.stderr)
        return 1
    names = ", ".join([*issued.dns_names, *issued.ips])
    readable = f", readable by group {issued.key_group}" if issued.key_group else ""
    print(f"certificate: {issued.cert}  ({names}; valid until {issued.not_after:%Y-%m-%d})")
    print(f"key:         {issued.key}  (mode {'0640' if issued.key_group else '0600'}{readable})")
    ca_note = "the same CA as before: phones that trust it need nothing new" if issued.ca_reused \
        else "new: install it on every phone and computer that opens the page (README, HTTPS)"
    print(f"CA:          {issued.ca}  ({ca_note})")
    if args.days > LEAF_DAYS:
        print(f"warning: iPhones and Macs refuse server certificates valid for more than "
              f"{LEAF_DAYS} days", file=sys.stderr)
    print("\nAdd to /etc/robotcam.yaml, then: sudo systemctl restart robotcam\n")
    print("server:\n  tls:")
    print(f"    cert: {issued.cert}\n    key: {issued.key}")
    print(f"\nPhones can download the CA from https://{issued.dns_names[0]}.local:<port>/robotcam-ca.crt"
          if len(issued.dns_names) > 2 else "")
    return 0


def _resolve(path: Path | None) -> Path | None:
    return path if path is not None else default_path()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 2

    if args.command == "gen-cert":
        return _gen_cert(args)
    if args.command == "hash-password":
        return _hash_password()
    if args.command == "new-token":
        return _new_token(args)
    if args.command == "reset-password":
        return _reset_password(args)

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
    from robotcam.service.logs import setup_logging
    from robotcam.service.runner import run_service

    setup_logging(config.logging.level)
    log.info(
        "robotcam %s starting with %s", __version__,
        path if path is not None else "built-in defaults (no /etc/robotcam.yaml)",
    )
    try:
        return run_service(config, path)
    except KeyboardInterrupt:
        return 0

"""Applying a new config to a running daemon (SIGHUP, `systemctl reload robotcam`).

What can change live does: log level, viewer limit, ICE servers and host addresses (for new
viewers), encoder bitrate and keyframe interval (the next frame is an IDR). Video source, size
and rate restart the source; viewers stay connected and resume at the next keyframe. Cameras
added, removed or changed start, stop or restart alone: the others' viewers see nothing. Only the
listening address and the HTTPS certificate (server.tls) need a restart, and the log says so.
"""

from __future__ import annotations

import logging
from typing import Any

from robotcam.config import Config
from robotcam.service.daemon import Daemon

log = logging.getLogger(__name__)

RESTART_REQUIRED = {"server.host", "server.port", "server.tls"}


def changed_keys(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """Dotted key → (old, new) for every leaf that differs, secrets masked."""
    out: dict[str, tuple[Any, Any]] = {}
    a, b = old.masked(), new.masked()
    for section in b:
        if not isinstance(b[section], dict):  # a list section (publish): compared whole
            if a[section] != b[section]:
                out[section] = (a[section], b[section])
            continue
        before, after = a.get(section) or {}, b[section]
        for key in list(before) + [k for k in after if k not in before]:  # cameras come and go
            was, now = before.get(key), after.get(key)
            if was == now:
                continue
            if section == "cameras" and isinstance(was, dict) and isinstance(now, dict):
                for leaf in now:  # a changed camera: its changed keys
                    if was.get(leaf) != now[leaf]:
                        out[f"cameras.{key}.{leaf}"] = (was.get(leaf), now[leaf])
            elif section == "cameras":  # one added or removed: not all its settings on one line
                out[f"cameras.{key}"] = ("(none)", "(added)") if was is None else ("(present)", "(removed)")
            else:
                out[f"{section}.{key}"] = (was, now)
    if old.webrtc.ice_servers != new.webrtc.ice_servers and "webrtc.ice_servers" not in out:
        out["webrtc.ice_servers"] = ("(credentials)", "(credentials changed)")
    if old.publish != new.publish and "publish" not in out:
        out["publish"] = ("(tokens)", "(a token or URL secret changed)")
    if old.auth.users != new.auth.users and "auth.users" not in out:
        out["auth.users"] = ("(passwords)", "(a password changed)")
    return out


async def apply_reload(daemon: Daemon, old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    await daemon.access.prepare(new.auth)  # the first-run admin's file (reset-password)
    changes = changed_keys(old, new)
    if not changes:
        log.info("reload: configuration unchanged")
        daemon.access.apply_config(new)
        daemon.revoke_stale_viewers()
        return changes
    for key, (before, after) in changes.items():
        note = " (takes effect after a restart)" if key in RESTART_REQUIRED else ""
        log.info("reload: %s: %s -> %s%s", key, before, after, note)
    daemon.apply_config(new)
    await daemon.cameras.reconfigure(new.camera_configs())
    return changes

"""TURN REST credentials (coturn's use-auth-secret scheme) and which servers get them."""

from __future__ import annotations

import base64
import hashlib
import hmac

from robotcam.config import Config, WebRTCConfig
from robotcam.webrtc.turn import ice_servers, turn_rest_credential


def test_credential_is_the_hmac_of_the_expiring_username() -> None:
    username, credential = turn_rest_credential("secret", 3600, now=1_700_000_000.7)
    assert username == "1700003600:robotcam"
    digest = hmac.new(b"secret", b"1700003600:robotcam", hashlib.sha1).digest()
    assert credential == base64.b64encode(digest).decode()
    assert turn_rest_credential("secret", 60, user="robotcam-7", now=0)[0] == "60:robotcam-7"


def test_only_turn_servers_without_a_username_get_minted_credentials() -> None:
    webrtc = WebRTCConfig.model_validate({
        "ice_servers": [
            {"urls": "stun:stun.example.org:3478"},
            {"urls": ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"]},
            {"urls": "turn:other.example.org", "username": "robot", "credential": "fixed"},
        ],
        "turn_secret": "shared",
        "turn_credential_ttl": 600,
    })
    stun, minted, static = ice_servers(webrtc)
    assert stun == {"urls": ["stun:stun.example.org:3478"]}
    assert minted["urls"] == ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"]
    expiry, _, user = minted["username"].partition(":")
    assert user == "robotcam" and expiry.isdigit()
    assert minted["credential"] == base64.b64encode(
        hmac.new(b"shared", minted["username"].encode(), hashlib.sha1).digest()).decode()
    assert static == {"urls": ["turn:other.example.org"], "username": "robot", "credential": "fixed"}


def test_without_a_secret_servers_pass_through_unchanged() -> None:
    webrtc = WebRTCConfig.model_validate({"ice_servers": [{"urls": "turn:turn.example.org"}]})
    assert ice_servers(webrtc) == [{"urls": ["turn:turn.example.org"]}]


def test_the_secret_is_masked_in_the_printed_config() -> None:
    config = Config.model_validate({"webrtc": {"turn_secret": "do-not-print"}})
    assert "do-not-print" not in str(config.masked())

"""The console's session: the API key a user logged in with, in a signed cookie.

The cookie lives for the browser session (no expiry), is HttpOnly (no script reads the
key) and SameSite=Strict (no other site's page sends it). Its signature, keyed by a
secret drawn when the edge starts, says the edge issued it; every request still presents
the key to the JSON API, which decides what it may read. Forms that change something
carry a token derived from the cookie (`csrf_token`), checked before the change.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

COOKIE = "meterline_console"
PATH = "/console"


class Sessions:
    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or os.urandom(32)

    def _mac(self, purpose: str, text: str) -> str:
        message = f"{purpose}:{text}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def cookie_for(self, key: str) -> str:
        encoded = base64.urlsafe_b64encode(key.encode()).decode()
        return f"{encoded}.{self._mac('session', encoded)}"

    def key_of(self, cookie: str | None) -> str | None:
        """The API key of a cookie this edge issued; None for anything else."""
        if not cookie or "." not in cookie:
            return None
        encoded, mac = cookie.rsplit(".", 1)
        if not hmac.compare_digest(mac, self._mac("session", encoded)):
            return None
        try:
            return base64.urlsafe_b64decode(encoded.encode()).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None

    def csrf_token(self, cookie: str) -> str:
        return self._mac("csrf", cookie)

    def csrf_ok(self, cookie: str | None, token: str) -> bool:
        return cookie is not None and hmac.compare_digest(self.csrf_token(cookie), token)

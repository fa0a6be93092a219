"""The dashboard's login: one token set at start; a session cookie derived from it."""

from __future__ import annotations

import hashlib
import hmac
import secrets

#: The cookie that carries the session (HttpOnly, SameSite=Strict).
COOKIE = "dalang_ui_session"


def new_token() -> str:
    """A fresh random token for the page (printed at start)."""
    return secrets.token_urlsafe(24)


class TokenAuth:
    """Checks a presented token, or the session cookie derived from it (never the token)."""

    def __init__(self, token: str) -> None:
        if len(token) < 8:
            raise ValueError("the dashboard token must have at least 8 characters")
        self._token = token.encode()
        self.session = hmac.new(self._token, b"dalang-ui-session", hashlib.sha256).hexdigest()

    def token_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self._token)

    def session_ok(self, cookie: str | None) -> bool:
        return cookie is not None and hmac.compare_digest(cookie.encode(), self.session.encode())

    def allowed(self, *, authorization: str | None, cookie: str | None) -> bool:
        """A request is allowed with ``Authorization: Bearer <token>`` or the session cookie."""
        if authorization is not None and authorization.lower().startswith("bearer "):
            return self.token_ok(authorization[7:].strip())
        return self.session_ok(cookie)

"""Dashboard sign-in: signed session cookies, CSRF tokens and the security headers of its pages.

A session names a role (viewer or admin), never a key: the cookie is the role, its expiry and
the session's CSRF token, signed with HMAC-SHA256 (RFC 2104) under a secret that is the env var
CROSSPROMO_SESSION_SECRET when set (`crosspromo serve` sets one for all its workers), else
random per process. Forms carry a CSRF token: the sign-in form's is also in a cookie (double
submit), the sign-out form's is the session's own. Cookies are HttpOnly and SameSite=Strict,
and Secure over https (or always, with CROSSPROMO_SECURE_COOKIES=1 behind a TLS proxy).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SESSION_COOKIE = "crosspromo_session"
CSRF_COOKIE = "crosspromo_csrf"
SESSION_SECONDS = 8 * 3600
SECRET_ENV = "CROSSPROMO_SESSION_SECRET"
SECURE_ENV = "CROSSPROMO_SECURE_COOKIES"

# Plotly adds <style> elements for its toolbar and hover boxes at run time, so styles need
# 'unsafe-inline'; scripts do not: every script is a file served from 'self'.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


@dataclass(frozen=True)
class Session:
    role: str
    csrf: str
    expires: float


class Signer:
    def __init__(self, secret: bytes | None = None) -> None:
        env = os.environ.get(SECRET_ENV)
        self.secret = secret or (env.encode() if env else secrets.token_bytes(32))

    def _mac(self, payload: bytes) -> str:
        return hmac.new(self.secret, payload, hashlib.sha256).hexdigest()

    def sign(self, data: dict[str, object]) -> str:
        payload = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode())
        return f"{payload.decode()}.{self._mac(payload)}"

    def unsign(self, token: str) -> dict[str, object] | None:
        payload, _, mac = token.rpartition(".")
        if not payload or not hmac.compare_digest(mac, self._mac(payload.encode())):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload.encode()))
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def new_session(self, role: str) -> str:
        return self.sign({"role": role, "csrf": secrets.token_urlsafe(24), "exp": time.time() + SESSION_SECONDS})

    def session(self, request: Request) -> Session | None:
        data = self.unsign(request.cookies.get(SESSION_COOKIE, ""))
        if data is None or not isinstance(data.get("exp"), (int, float)) or data["exp"] < time.time():
            return None
        role, csrf = data.get("role"), data.get("csrf")
        return Session(role, csrf, float(data["exp"])) if isinstance(role, str) and isinstance(csrf, str) else None


def secure_cookies(request: Request) -> bool:
    return request.url.scheme == "https" or os.environ.get(SECURE_ENV) == "1"


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/ui", httponly=True, samesite="strict",
                        secure=secure_cookies(request))


def tokens_match(given: str | None, expected: str | None) -> bool:
    return bool(given) and bool(expected) and hmac.compare_digest(str(given), str(expected))


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` to every answer under `prefixes` (the dashboard's pages and files;
    static files keep their own cache header)."""

    def __init__(self, app: ASGIApp, prefixes: tuple[str, ...] = ("/ui",)) -> None:
        self.app, self.prefixes = app, prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == "/" or path.startswith(self.prefixes)):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k.encode() not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)

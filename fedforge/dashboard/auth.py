"""Who may read the dashboard: loopback callers freely, everyone else with the token.

A dashboard bound to a loopback address needs no token (anyone on the machine can read the
run directory anyway) but answers only requests whose ``Host`` names a loopback address, so
a web page elsewhere cannot read it through DNS rebinding. Bound to any other address it
needs the token printed at start, given as ``Authorization: Bearer TOKEN``, as
``?token=TOKEN`` (the link printed at start; it then sets a cookie and redirects to the
bare address) or as that cookie. Every response forbids framing and sniffing.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "fedforge_dashboard"
_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        b"frame-ancestors 'none'",
    ),
]


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost`` and the rest of 127.0.0.0/8."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _host_of(header: str) -> str:
    if header.startswith("["):  # [::1]:8050
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


@dataclass(frozen=True)
class Guard:
    """``token`` None: loopback callers only (checked by ``Host``); else the token."""

    token: str | None
    secure_cookie: bool = False  # served over TLS

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            verdict = self._check(scope)
            if verdict == "ok":
                await app(scope, receive, _with_headers(send))
            elif verdict == "set-cookie":
                await self._redirect_with_cookie(scope, send)
            else:
                await _plain(send, 401 if self.token else 403, verdict)

        return guarded

    def _check(self, scope: Scope) -> str:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if self.token is None:
            if is_loopback(_host_of(headers.get("host", ""))):
                return "ok"
            return "this dashboard answers only requests addressed to a loopback host\n"
        auth = headers.get("authorization", "")
        if auth.startswith("Bearer ") and self._same(auth[7:]):
            return "ok"
        cookie = SimpleCookie(headers.get("cookie", ""))
        if COOKIE in cookie and self._same(cookie[COOKIE].value):
            return "ok"
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if any(self._same(t) for t in query.get("token", [])):
            return "set-cookie" if scope["path"] == "/" else "ok"
        return "a token is required: open the link printed when the dashboard started\n"

    def _same(self, given: str) -> bool:
        assert self.token is not None
        return hmac.compare_digest(given.encode(), self.token.encode())

    async def _redirect_with_cookie(self, scope: Scope, send: Send) -> None:
        assert self.token is not None
        flags = "; HttpOnly; SameSite=Strict; Path=/" + ("; Secure" if self.secure_cookie else "")
        headers = [
            (b"location", b"/"),
            (b"set-cookie", f"{COOKIE}={self.token}{flags}".encode()),
            (b"cache-control", b"no-store"),
            *_HEADERS,
        ]
        await send({"type": "http.response.start", "status": 303, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


def _with_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *_HEADERS]}
        await send(message)

    return sending


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", b"Bearer"),
        *_HEADERS,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

"""Who may use the UI: nobody but this machine by default (it binds 127.0.0.1); exposed,
`--auth user:password` (HTTP Basic, the browser asks) or `--auth TOKEN` (a bearer token, or
Basic with the token as password)."""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tunelab.errors import ConfigError


@dataclass(frozen=True)
class Auth:
    user: str | None  # None: a token
    secret: str

    @classmethod
    def parse(cls, text: str) -> Auth:
        user, sep, secret = text.partition(":")
        if not sep:
            user, secret = None, text  # type: ignore[assignment]
        if not secret or (sep and not user):
            raise ConfigError("--auth: give user:password or a token (neither part empty)")
        if len(secret) < 8:
            raise ConfigError("--auth: use a password or token of 8 characters or more")
        return cls(user, secret)

    def allows(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and self.user is None:
            return secrets.compare_digest(value.strip().encode(), self.secret.encode())
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user_ok = self.user is None or secrets.compare_digest(user.encode(), self.user.encode())
        return user_ok & secrets.compare_digest(password.encode(), self.secret.encode())


class AuthMiddleware(BaseHTTPMiddleware):
    def __init__(self, app, auth: Auth):  # type: ignore[no-untyped-def]
        super().__init__(app)
        self.auth = auth

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if self.auth.allows(request.headers.get("authorization", "")):
            return await call_next(request)
        return JSONResponse({"error": "this tunelab ui wants a login (--auth)"}, 401,
                            {"WWW-Authenticate": 'Basic realm="tunelab ui"'})

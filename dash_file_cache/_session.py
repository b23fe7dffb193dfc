"""Which browser is asking: the session token behind ``scope="session"`` entries.

The service gives each browser a random 256-bit token in an HttpOnly, SameSite=Lax
cookie when a page of the app loads (or when a session-scoped entry is registered
in a request without one). A session-scoped entry stores only the SHA-256 of
the token of the browser that registered it, and is served only to a request
carrying that token. The token is unguessable on its own, so it needs no
signature, and no secret has to be shared by the server's workers or by
background-callback processes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

import flask

__all__ = ["COOKIE_NAME", "current_session", "install", "matches"]

COOKIE_NAME = "dash_file_cache_session"
# Where a token made during a request waits for its response, in ``flask.g``.
_NEW_TOKEN = "dash_file_cache_new_session"
_TOKEN_LENGTH = 43  # secrets.token_urlsafe(32)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _valid(token: object) -> bool:
    return (
        isinstance(token, str)
        and len(token) == _TOKEN_LENGTH
        and all(c.isalnum() or c in "-_" for c in token)
    )


def _token_from_callback_context() -> str | None:
    """The cookie seen by a Dash callback, also inside a background-callback process."""
    try:
        from dash import callback_context
    except ImportError:
        return None
    try:
        cookies: Any = callback_context.cookies
    except Exception:  # outside a callback, dash raises its own MissingCallbackContextException
        return None
    token = cookies.get(COOKIE_NAME) if isinstance(cookies, dict) else None
    return token if _valid(token) else None


def current_session() -> str:
    """The session digest of the browser behind the current request or callback.

    Inside a request that carries no token yet, a new token is made and set on the
    response. Raises ``RuntimeError`` where no browser can be identified.
    """
    token = _token_from_callback_context()
    if token is None and flask.has_request_context():
        token = flask.request.cookies.get(COOKIE_NAME)
        if not _valid(token):
            token = _new_token_for_this_response()
    if token is None:
        raise RuntimeError(
            'scope="session" needs the browser\'s session: register the entry inside a '
            "Dash callback or a Flask request of an app served by this service"
        )
    return _digest(token)


def _new_token_for_this_response() -> str:
    # One token per request: several session-scoped entries registered in the same
    # request belong to the same browser.
    existing = flask.g.get(_NEW_TOKEN)
    if existing is not None:
        return str(existing)
    token = secrets.token_urlsafe(32)
    setattr(flask.g, _NEW_TOKEN, token)
    if flask.current_app.extensions.get("dash_file_cache_session"):
        flask.after_this_request(_set_new_token)
    return token


def matches(request: flask.Request, digest: str) -> bool:
    """Tell whether ``request`` comes from the browser whose session is ``digest``."""
    token = request.cookies.get(COOKIE_NAME)
    return _valid(token) and hmac.compare_digest(_digest(str(token)), digest)


def _set_new_token(response: flask.Response) -> flask.Response:
    """Send the token made in this request."""
    return _with_token(response, getattr(flask.g, _NEW_TOKEN))


def set_cookie(response: flask.Response) -> flask.Response:
    """Give a page a token as it loads, unless the browser has one.

    Every later callback (background ones included) then already has one; other
    answers are left alone. It runs on every response of the app, so the common
    case costs one comparison.
    """
    if response.mimetype != "text/html" or response.status_code == 204:
        return response
    request = flask.request
    if flask.g.get(_NEW_TOKEN) is not None:
        return response  # sent by _set_new_token
    # Without a Cookie header there is no token, and nothing to parse.
    if "HTTP_COOKIE" in request.environ and _valid(request.cookies.get(COOKIE_NAME)):
        return response
    return _with_token(response, secrets.token_urlsafe(32))


def _with_token(response: flask.Response, token: str) -> flask.Response:
    response.set_cookie(
        COOKIE_NAME,
        token,
        httponly=True,
        samesite="Lax",
        secure=flask.request.is_secure,
        path="/",
    )
    return response


def install(app: flask.Flask) -> None:
    """Make ``app`` give every browser a session token (once per app)."""
    if app.extensions.get("dash_file_cache_session"):
        return
    app.extensions["dash_file_cache_session"] = True
    app.after_request(set_cookie)

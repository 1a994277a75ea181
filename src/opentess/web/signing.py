"""What the console signs with its key (opentess.web.accounts.Accounts.signing_key): session
cookies, CSRF tokens and setup links. itsdangerous signs and timestamps; CSRF tokens are HMACs
of the session's secret, so they need no storage and die with the session."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from itsdangerous import BadSignature, URLSafeTimedSerializer

SETUP_LINK_HOURS = 24
SIGNIN_FORM_S = 3600  # a sign-in form left open longer is sent again


class Signer:
    def __init__(self, key: str) -> None:
        self._key = key.encode()
        self._session = URLSafeTimedSerializer(key, salt="opentess.console.session")
        self._signin = URLSafeTimedSerializer(key, salt="opentess.console.signin")
        self._setup = URLSafeTimedSerializer(key, salt="opentess.console.setup")

    def _mac(self, purpose: str, value: str) -> str:
        return hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    # sessions

    def session_cookie(self, secret: str) -> str:
        return self._session.dumps(secret)

    def session_secret(self, cookie: str | None, max_age_s: float) -> str | None:
        """The session secret a cookie carries; None when it is forged, altered or too old."""
        if not cookie:
            return None
        try:
            value = self._session.loads(cookie, max_age=int(max_age_s))
        except BadSignature:  # SignatureExpired is one
            return None
        return value if isinstance(value, str) else None

    def csrf_token(self, secret: str) -> str:
        """The CSRF token of a session: every form and state-changing call of it carries it."""
        return self._mac("csrf", secret)

    # the sign-in and setup forms, before any session exists (their CSRF tokens are bound to
    # a random value in a cookie of their own: a page of another site cannot sign you in)

    @staticmethod
    def new_nonce() -> str:
        return secrets.token_urlsafe(24)

    def form_cookie(self, nonce: str) -> str:
        return self._signin.dumps(nonce)

    def form_nonce(self, cookie: str | None) -> str | None:
        if not cookie:
            return None
        try:
            value = self._signin.loads(cookie, max_age=SIGNIN_FORM_S)
        except BadSignature:
            return None
        return value if isinstance(value, str) else None

    def form_token(self, nonce: str) -> str:
        return self._mac("signin", nonce)

    # setup links: set the first password of a user who has none, within SETUP_LINK_HOURS

    def setup_token(self, user_id: int) -> str:
        return self._setup.dumps({"user": user_id})

    def setup_user(self, token: str | None) -> int | None:
        if not token:
            return None
        try:
            value = self._setup.loads(token, max_age=SETUP_LINK_HOURS * 3600)
        except BadSignature:
            return None
        user = value.get("user") if isinstance(value, dict) else None
        return user if isinstance(user, int) and not isinstance(user, bool) else None


def same(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a token with what a request sent."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())

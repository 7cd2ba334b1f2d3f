"""Optional bearer-token authentication of the HTTP API.

Off unless tokens are configured: ``CHROMA_AUTH_TOKENS`` (comma-separated) and/or
``CHROMA_AUTH_TOKEN_FILE`` (one token a line; blank lines and ``#`` comments skipped). When
on, every route but ``/healthz`` wants ``Authorization: Bearer <token>``. A given token is
compared with every configured one in constant time, and a refusal says the same whatever
was wrong (no header, another scheme, an unknown token).
"""

from __future__ import annotations

import hmac
from pathlib import Path

from chroma_core.config import Settings
from chroma_wire.errors import InvalidInput, Unauthorized

REFUSAL = "this server wants a valid bearer token (Authorization: Bearer <token>)"


def tokens(settings: Settings) -> tuple[bytes, ...]:
    """The configured tokens; empty when authentication is off."""
    found = [token for token in settings.auth_tokens if token]
    if settings.auth_token_file:
        path = Path(settings.auth_token_file)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read the token file {str(path)!r}: {exc}") from None
        lines = [line.strip() for line in text.splitlines()]
        from_file = [line for line in lines if line and not line.startswith("#")]
        if not from_file:
            raise InvalidInput(f"the token file {str(path)!r} holds no token")
        found += from_file
    return tuple(token.encode() for token in found)


def check(header: str | None, configured: tuple[bytes, ...]) -> None:
    """Raise :class:`Unauthorized` unless ``header`` carries one of ``configured``."""
    if not configured:
        return
    scheme, _, given = (header or "").partition(" ")
    presented = given.strip().encode()
    matched = False
    for token in configured:  # every token is compared, so timing tells nothing of which
        matched |= hmac.compare_digest(presented, token)
    if not (matched and scheme.lower() == "bearer"):
        raise Unauthorized(REFUSAL)

"""Bearer tokens: made once, shown once, stored only as a hash.

Tokens are 256-bit random strings, so a plain SHA-256 is enough to store them (no salt or slow hash is
needed: there is nothing to brute-force that is smaller than the token itself). Roles are ordered:
an admin can do what a lead can, a lead what a reviewer can.
"""

from __future__ import annotations

import hashlib
import secrets

from edgemine.errors import ConfigError
from edgemine.review_api.db import ROLES

TOKEN_PREFIX = "em_"
_RANK = {role: i for i, role in enumerate(ROLES)}


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_role(role: str) -> str:
    if role not in _RANK:
        raise ConfigError(f"role={role!r} is not one of {list(ROLES)}")
    return role


def role_allows(role: str, needed: str) -> bool:
    """True when `role` is `needed` or above it (reviewer < lead < admin)."""
    return _RANK.get(role, -1) >= _RANK[needed]

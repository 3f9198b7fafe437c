"""Password hashing (argon2) and opaque tokens stored as SHA-256 digests."""

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Verifying against this keeps sign-in for unknown accounts as slow as for known ones.
_DUMMY_HASH = _hasher.hash("nodeplane-dummy-password")

MIN_PASSWORD_LENGTH = 8


def hash_password(password: str) -> str:
    """An argon2id hash of `password`."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches; constant work whether or not the account exists."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


# The readable prefixes of API keys' secrets, by kind (services/api_keys.py).
EXECUTOR_KEY_PREFIX = "npx"
PERSONAL_KEY_PREFIX = "npk"


def new_token(prefix: str) -> str:
    """A new random bearer token with a readable prefix (`nps_`, `npk_`, `npi_`)."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def token_digest(token: str) -> str:
    """The stored form of a token: tokens are random, so a fast hash is enough."""
    return hashlib.sha256(token.encode()).hexdigest()

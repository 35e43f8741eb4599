"""Credentials: salted password hashes and token hashes, made and checked. Pure: no I/O.

A password is stored as `pbkdf2_sha256$<iterations>$<salt>$<hash>` (the salt and the hash
in unpadded URL-safe base64): Django's format, and the one OWASP recommends with 600 000
iterations. A Bearer token is a long random secret, so a single SHA-256 suffices to keep it
out of the configuration: `sha256$<hex digest>`. A token may also be stored as a PBKDF2 hash;
a password may not be stored as a plain SHA-256, which guessing would break quickly.

Every comparison of secrets goes through `hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

__all__ = [
    "DEFAULT_ITERATIONS",
    "PBKDF2",
    "SHA256",
    "ParsedHash",
    "hash_password",
    "hash_token",
    "new_token",
    "parse_hash",
    "verify",
]

PBKDF2 = "pbkdf2_sha256"
SHA256 = "sha256"
#: OWASP's recommendation for PBKDF2-HMAC-SHA256 (2023)
DEFAULT_ITERATIONS = 600_000
#: more than this many iterations would let a configuration stall every login for minutes
MAX_ITERATIONS = 10_000_000
SALT_BYTES = 16
TOKEN_BYTES = 32


@dataclass(frozen=True)
class ParsedHash:
    algorithm: str
    iterations: int
    salt: bytes
    digest: bytes


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_hash(encoded: str) -> ParsedHash:
    """The parts of a stored hash; ValueError saying what is wrong with it."""
    algorithm, _, rest = encoded.partition("$")
    if algorithm == PBKDF2:
        parts = rest.split("$")
        if len(parts) != 3:
            raise ValueError(f"expected '{PBKDF2}$<iterations>$<salt>$<hash>'")
        iterations_text, salt_text, digest_text = parts
        if not iterations_text.isascii() or not iterations_text.isdigit():
            raise ValueError(f"the iterations must be a number, got {iterations_text!r}")
        iterations = int(iterations_text)
        if not 1 <= iterations <= MAX_ITERATIONS:
            raise ValueError(f"the iterations must be 1 to {MAX_ITERATIONS}, got {iterations}")
        try:
            salt = _b64decode(salt_text)
            digest = _b64decode(digest_text)
        except (binascii.Error, ValueError):
            raise ValueError("the salt and the hash must be URL-safe base64") from None
        if not salt or len(digest) != hashlib.sha256().digest_size:
            raise ValueError("the salt must not be empty and the hash must be 32 bytes")
        return ParsedHash(PBKDF2, iterations, salt, digest)
    if algorithm == SHA256:
        try:
            digest = bytes.fromhex(rest)
        except ValueError:
            raise ValueError(f"expected '{SHA256}$<64 hex digits>'") from None
        if len(digest) != hashlib.sha256().digest_size:
            raise ValueError(f"expected '{SHA256}$<64 hex digits>'")
        return ParsedHash(SHA256, 1, b"", digest)
    raise ValueError(f"unknown hash algorithm {algorithm!r}; expected {PBKDF2} or {SHA256}")


def hash_password(
    password: str, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> str:
    """`pbkdf2_sha256$<iterations>$<salt>$<hash>` of a password, with a fresh random salt."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{PBKDF2}${iterations}${_b64encode(salt)}${_b64encode(digest)}"


def hash_token(token: str) -> str:
    """`sha256$<hex>` of a token: enough for a random secret of 32 bytes."""
    return f"{SHA256}${hashlib.sha256(token.encode()).hexdigest()}"


def new_token() -> str:
    """A fresh Bearer token: 32 random bytes, URL-safe base64."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def verify(secret: str, stored: ParsedHash) -> bool:
    """Whether `secret` matches the stored hash, compared in constant time. PBKDF2 takes as
    long as its iterations say (a quarter of a second at 600 000): call it off the loop."""
    if stored.algorithm == PBKDF2:
        digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), stored.salt, stored.iterations)
    else:
        digest = hashlib.sha256(secret.encode()).digest()
    return hmac.compare_digest(digest, stored.digest)

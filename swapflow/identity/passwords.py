"""Password hashes in Mosquitto's `$7$` format (PBKDF2-SHA512, as `mosquitto_passwd` writes them), so
one stored hash serves the embedded broker and a Mosquitto password file alike."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# Mosquitto's own default. The secrets we issue are 256 random bits, which no stretching makes stronger,
# and a broker verifies one hash per connection: a fleet reconnecting at once must stay cheap.
ITERATIONS = 101
_SALT_BYTES = 12


def new_secret() -> str:
    """A fresh random secret (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """`$7$<iterations>$<salt>$<hash>`, what `mosquitto_passwd` writes after `username:`."""
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches a `$7$` hash; False for anything malformed."""
    try:
        _, kind, iterations, salt, digest = stored.split("$")
        if kind != "7":
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = hashlib.pbkdf2_hmac(
            "sha512", password.encode(), base64.b64decode(salt, validate=True), int(iterations)
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)

"""Signing keys: generate them with Nix, read and check them without showing them.

A Nix secret key file holds ``name:base64(64 bytes)`` (libsodium's Ed25519 layout: a
32-byte seed then the 32-byte public key), the public key is ``name:base64(32 bytes)``.
The key *name* is what narinfo ``Sig:`` lines and ``trusted-public-keys`` match on.
Nothing here prints or raises with the key material.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .. import nix
from .errors import SigningKeyError

SECRET_KEY_BYTES = 64
PUBLIC_KEY_BYTES = 32
KEY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class SigningKey:
    """A checked secret key file: its path and key name (the material stays on disk)."""

    path: Path
    name: str
    public_key: str
    # The file's permission bits (0o600 as the master's step writes it), said in the push's
    # result so that a log shows how the key lay on disk, never what it holds.
    mode: int = 0o600


def parse_secret_key(text: str) -> tuple[str, bytes]:
    """(name, raw key) from a secret key file's text; ValueError without quoting the text."""
    name, sep, b64 = text.strip().partition(":")
    # Nix's base64 decoder skips newlines, so a key may be wrapped over several lines.
    b64 = b64.replace("\n", "")
    if not sep or not KEY_NAME_RE.match(name):
        raise ValueError("not a Nix secret key (expected 'name:base64')")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"key {name!r}: not valid base64") from None
    if len(raw) != SECRET_KEY_BYTES:
        raise ValueError(f"key {name!r}: {len(raw)} bytes, a Nix secret key has {SECRET_KEY_BYTES}")
    return name, raw


def public_key_of(name: str, raw_secret: bytes) -> str:
    """The public key Nix derives: the second half of libsodium's secret key."""
    return f"{name}:{base64.b64encode(raw_secret[PUBLIC_KEY_BYTES:]).decode()}"


def read_signing_key(path: str | os.PathLike) -> SigningKey:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise SigningKeyError(f"signing key {p}: file not found") from None
    except IsADirectoryError:
        raise SigningKeyError(f"signing key {p}: is a directory, not a key file") from None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not text"
        raise SigningKeyError(f"signing key {p}: cannot read it ({reason})") from None
    try:
        name, raw = parse_secret_key(text)
    except ValueError as e:
        raise SigningKeyError(f"signing key {p}: {e}") from None
    return SigningKey(path=p.resolve(), name=name, public_key=public_key_of(name, raw),
                      mode=p.stat().st_mode & 0o777)


def generate_keypair(name: str, out_dir: str | os.PathLike) -> tuple[Path, Path, str]:
    """Write ``NAME.secret`` (mode 600) and ``NAME.public`` in ``out_dir``; return both and the public key."""
    if not KEY_NAME_RE.match(name):
        raise SigningKeyError(f"key name {name!r}: use letters, digits, '.', '_' and '-', e.g. redox-ci-cache-1")
    out = Path(out_dir)
    secret_path, public_path = out / f"{name}.secret", out / f"{name}.public"
    for p in (secret_path, public_path):
        if p.exists():
            raise SigningKeyError(f"{p} already exists; refusing to overwrite a key")
    out.mkdir(parents=True, exist_ok=True)
    secret = nix.generate_secret_key(name, error=SigningKeyError)
    public = nix.public_key(secret, error=SigningKeyError)
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.strip() + "\n")
    public_path.write_text(public + "\n")
    return secret_path, public_path, public

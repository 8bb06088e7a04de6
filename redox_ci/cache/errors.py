"""Cache failures, one class per kind, so the CLI and the step can say what went wrong.

Configuration problems (no such bucket, rejected credentials, an unreadable signing key,
a path that is not in the store) exit 2: retrying cannot help. A push that failed after
its retries were used up exits 1. No message ever holds a secret: errors name files and
key names, never their contents.
"""

from __future__ import annotations

from ..errors import CheckFailed, ConfigError, NixError, UsageError


class BucketNotFound(ConfigError):
    """The bucket does not exist at the endpoint."""


class CredentialsRejected(ConfigError):
    """No credentials were found, or S3 refused them (unknown key, bad signature, expired)."""


class AccessDenied(ConfigError):
    """The credentials are valid but the bucket policy forbids the operation."""


class SigningKeyError(UsageError):
    """The secret signing key file is missing, unreadable or not a Nix secret key."""


class NotInStore(UsageError):
    """A path given to push is not a valid path in the local Nix store."""


class StagingError(NixError):
    """``nix copy --to file://`` failed, or wrote less than it said."""


class PushFailed(CheckFailed):
    """Uploading failed after every retry (the endpoint kept failing or vanished)."""

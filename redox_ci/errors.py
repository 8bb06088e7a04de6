"""One exception class per kind of failure, each with a message for a person.

The CLI maps ``UsageError`` subclasses to exit 2 and ``CheckFailed`` subclasses to
exit 1; neither ever reaches the user as a traceback.
"""


class RedoxCIError(Exception):
    """Base of every error redox-ci reports to a person."""

    exit_code = 2


class UsageError(RedoxCIError):
    """The caller asked for something that cannot be done as asked (exit 2)."""


class ConfigError(UsageError):
    """The settings or secrets file is wrong: names the file and the key."""


class FlakeError(UsageError):
    """The flake reference is not a flake, or it does not evaluate."""


class NixError(RedoxCIError):
    """A Nix command failed for a reason other than the checked thing failing."""


class CheckFailed(RedoxCIError):
    """The thing being checked failed (a build, a test, a boot): exit 1."""

    exit_code = 1

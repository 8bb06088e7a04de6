"""The web UI: views, login, and who may do what.

Buildbot's authz allows any action that no rule matches, so the last rule here
matches every control action and denies it to anyone who is not an admin:
anonymous users read, logged-in admins force, stop and rebuild.
"""

from __future__ import annotations

from buildbot.plugins import util

from ..config import Settings
from . import github

ADMIN_ROLE = "admins"


def authz(usernames: list[str]) -> util.Authz:
    return util.Authz(
        allowRules=[util.AnyControlEndpointMatcher(role=ADMIN_ROLE, defaultDeny=True)],
        roleMatchers=[util.RolesFromUsername(roles=[ADMIN_ROLE], usernames=usernames)],
    )


def listen_on(port: int, interface: str) -> str:
    """A Twisted endpoint for Buildbot's ports: ``port`` on ``interface`` only.

    Without an interface Twisted listens on every one; colons of an IPv6 address are
    escaped, since the endpoint string is split on them.
    """
    return f"tcp:{port}:interface={interface.replace(':', chr(92) + ':')}"


def www_config(settings: Settings, users: dict[str, str], extra_plugins: dict | None = None) -> dict:
    www = {
        "port": listen_on(settings.www.port, settings.www.interface),
        "plugins": {"waterfall_view": {}, "console_view": {}, "grid_view": {}, **(extra_plugins or {})},
        "auth": util.UserPasswordAuth(dict(users)),
        "authz": authz(sorted(users)),
        "change_hook_dialects": {},
    }
    if settings.www.github_webhook:
        # strict: refuse payloads without a valid X-Hub-Signature. class: only pushes to
        # the flake repository's branches (and [flake].tags) become changes.
        www["change_hook_dialects"]["github"] = {
            "secret": util.Secret("github-webhook-secret"), "strict": True,
            "class": github.dialect(settings.flake),
        }
    return www

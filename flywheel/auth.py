"""Who the current user is and what their role allows.

Roles: a *labeler* labels approved, scrubbed traces and never sees raw text; a *reviewer* compares raw
and scrubbed text and signs scrubs off; a *lead* plans sampling, imports and folds in. The library
enforces these rules itself (``require_role``), so no page can leak what its user may not see.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from flywheel.errors import BadInput, PermissionDenied

ROLES = ("labeler", "reviewer", "lead")
RAW_TEXT_ROLES = ("reviewer", "lead")


@dataclass(frozen=True)
class User:
    name: str
    role: str
    email: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise BadInput(f"user {self.name!r} has role {self.role!r}; expected one of {', '.join(ROLES)}")

    @property
    def sees_raw_text(self) -> bool:
        """Whether this user may read unscrubbed trace text."""
        return self.role in RAW_TEXT_ROLES


def load_users(path: str | Path) -> list[User]:
    """Local users from a TOML file of ``[users.NAME]`` tables with ``role`` and optional ``email``."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"users file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise BadInput(f"users file {str(path)!r} is not valid TOML: {error}") from None
    users = data.get("users")
    if not isinstance(users, dict) or not users:
        raise BadInput(f"users file {str(path)!r} has no [users.NAME] tables")
    return [_user(name, entry, path) for name, entry in users.items()]


def _user(name: str, entry: object, path: Path) -> User:
    if not isinstance(entry, dict) or "role" not in entry:
        raise BadInput(f"users file {str(path)!r}: [users.{name}] needs a role")
    return User(name=name, role=entry["role"], email=entry.get("email"))


def user_for_email(users: list[User], email: str, display_name: str | None = None) -> User:
    """The signed-in (OIDC) user: the role listed for their e-mail, else labeler (least privilege)."""
    for user in users:
        if user.email and user.email.lower() == email.lower():
            return user
    return User(name=display_name or email, role="labeler", email=email)


def require_role(user: User, *roles: str) -> None:
    """Raise PermissionDenied unless the user has one of ``roles``."""
    if user.role not in roles:
        raise PermissionDenied(f"{user.name} is a {user.role}; this needs the role {' or '.join(roles)}")

"""Who the current user is and what their role allows.

Roles: a *labeler* labels approved, scrubbed traces and never sees raw text; a *reviewer* compares raw
and scrubbed text and signs scrubs off; a *lead* plans sampling, imports and folds in. The library
enforces these rules itself (``require_role``), so no page can leak what its user may not see.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass
from pathlib import Path

from flywheel.errors import BadInput, PermissionDenied

ROLES = ("labeler", "reviewer", "lead")  # least privileged first
RAW_TEXT_ROLES = ("reviewer", "lead")
SIGN_IN_HELP = (
    "This server is reachable beyond this machine and nobody signs in, so anyone who reaches it could pick"
    " any user: raw text and reviewer or lead actions are off. To use them, add an [auth] section"
    " (an OIDC provider, see st.login) to .streamlit/secrets.toml and list people's e-mails and roles in"
    " the users file, or serve the app on 127.0.0.1 only (the default in .streamlit/config.toml)."
)


@dataclass(frozen=True)
class User:
    """Someone using Flywheel. ``exposed`` marks a user picked from the local list (no sign-in) on a
    server reachable beyond loopback: such a user holds a labeler's rights whatever the role says."""

    name: str
    role: str
    email: str | None = None
    exposed: bool = False

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise BadInput(f"user {self.name!r} has role {self.role!r}; expected one of {', '.join(ROLES)}")

    def may(self, *roles: str) -> bool:
        """Whether this user holds one of ``roles`` (an exposed user only a labeler's)."""
        return self.role in roles and (not self.exposed or "labeler" in roles)

    @property
    def sees_raw_text(self) -> bool:
        """Whether this user may read unscrubbed trace text."""
        return self.may(*RAW_TEXT_ROLES)


def load_users(path: str | Path) -> list[User]:
    """Local users from a TOML file of ``[users.NAME]`` tables with ``role`` and optional ``email``."""
    path = Path(path)
    data = _toml_file(path, "users file")
    users = data.get("users")
    if not isinstance(users, dict) or not users:
        raise BadInput(f"users file {str(path)!r} has no [users.NAME] tables")
    return [_user(name, entry, path) for name, entry in users.items()]


def _toml_file(path: Path, what: str) -> dict:
    """A TOML file's tables; BadInput naming the file and what is wrong with it."""
    if path.is_dir():
        raise BadInput(f"{what} {str(path)!r} is a folder; expected a TOML file")
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{what} {str(path)!r} does not exist") from None
    except OSError as error:
        raise BadInput(f"{what} {str(path)!r} cannot be read: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise BadInput(f"{what} {str(path)!r} is not UTF-8 text (byte {error.start})") from None
    except tomllib.TOMLDecodeError as error:
        raise BadInput(f"{what} {str(path)!r} is not valid TOML: {error}") from None


def _user(name: str, entry: object, path: Path) -> User:
    if not isinstance(entry, dict) or "role" not in entry:
        raise BadInput(f"users file {str(path)!r}: [users.{name}] needs a role")
    email = entry.get("email")
    if email is not None and not isinstance(email, str):
        raise BadInput(f"users file {str(path)!r}: [users.{name}] email {email!r}: expected text")
    if not name.strip() or not name.isprintable():
        raise BadInput(f"users file {str(path)!r}: user name {name!r}: expected printable text")
    return User(name=name, role=entry["role"], email=email)


AUTH_KEYS = ("redirect_uri", "cookie_secret")
PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")


def check_sign_in_settings(secrets_files: list[str]) -> bool:
    """Whether sign-in (an ``[auth]`` section, read by st.login) is configured in the secrets files.

    A secrets file that cannot be read or parsed, or an ``[auth]`` section without the keys sign-in
    needs, raises BadInput with the reason: Streamlit would ignore such a file and start with sign-in
    off, and anyone who reaches the server could then pick a user. Files merge as Streamlit merges them
    (a later file's table replaces an earlier one's); a path that is no ``.toml`` file (a folder of
    secrets) is Streamlit's own to read.
    """
    merged: dict = {}
    for name in secrets_files:
        path = Path(name)
        if name.endswith(".toml") and (path.exists() or path.is_symlink()):
            merged.update(_toml_file(path, "secrets file"))
    auth = merged.get("auth")
    if auth is None:
        return False
    if not isinstance(auth, dict):
        raise BadInput(
            "the [auth] setting in the secrets file must be a table: sign-in cannot start; make it a table"
            " (see st.login) or remove it"
        )
    _require_keys(auth, AUTH_KEYS, "[auth]")
    # The sign-in button calls st.login() without a provider: [auth.default], else [auth]'s own keys.
    default = auth.get("default")
    if isinstance(default, dict):
        _require_keys(default, PROVIDER_KEYS, "[auth.default]")
    else:
        _require_keys(auth, PROVIDER_KEYS, "[auth]")
    return True


def _require_keys(table: dict, keys: tuple[str, ...], section: str) -> None:
    missing = [key for key in keys if not table.get(key)]
    if missing:
        raise BadInput(
            f"the {section} section of the secrets file lacks {', '.join(missing)}: sign-in cannot start;"
            " complete it (see st.login) or remove the [auth] section"
        )


def least_privileged(users: list[User]) -> User:
    """The user a fresh session starts as: the first of the lowest role in the file."""
    return min(users, key=lambda user: ROLES.index(user.role))


def user_for_email(users: list[User], email: str, verified: bool | None = None) -> User:
    """The signed-in (OIDC) user. Their identity is the e-mail the provider verified, never a display
    name; the role is the one listed for that e-mail, else labeler (least privilege)."""
    email = (email or "").strip().lower()
    if "@" not in email:
        raise PermissionDenied("the identity provider sent no e-mail address; sign-in needs one")
    if verified is False:
        raise PermissionDenied(f"the identity provider has not verified the e-mail {email!r}")
    role = next((u.role for u in users if u.email and u.email.strip().lower() == email), "labeler")
    return User(name=email, role=role, email=email)


def is_loopback(address: str | None) -> bool:
    """Whether a listening or client address stays on this machine (a Unix socket does)."""
    if not address:
        return False
    address = address.strip().strip("[]")
    if address == "localhost" or address.startswith("unix://"):
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def reachable_beyond_loopback(
    server_address: str | None, client_ip: str | None = None, forwarded: bool = False
) -> bool:
    """Whether a session may come from another machine: the server listens beyond loopback (no
    address means every interface), the client is remote, or a proxy forwarded the request."""
    remote_client = client_ip is not None and not is_loopback(client_ip)
    return not is_loopback(server_address) or remote_client or forwarded


def require_role(user: User, *roles: str) -> None:
    """Raise PermissionDenied unless the user has one of ``roles``."""
    if user.role not in roles:
        raise PermissionDenied(f"{user.name} is a {user.role}; this needs the role {' or '.join(roles)}")
    if not user.may(*roles):
        raise PermissionDenied(SIGN_IN_HELP)

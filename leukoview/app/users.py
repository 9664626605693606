"""Who may review and who may sign off: a local users file with salted password hashes (argon2id), or a
laboratory's identity provider through Streamlit's OpenID Connect login (``st.login``; see the README).

``python -m leukoview users add NAME --role reviewer|supervisor`` asks for the password (never echoed, never
stored or logged in clear) and writes ``<review dir>/users.json`` (owner read/write only). With no users file the
app runs in a clearly marked single-user *demo* mode, as before. Roles: a reviewer classifies cells; only a
supervisor signs off a slide. No Streamlit here; :mod:`leukoview.app.ui` draws the sign-in.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from leukoview.primitives import settings

ROLES = ("reviewer", "supervisor")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$")
MIN_PASSWORD = 10
DEMO, LOCAL, OIDC = "demo", "signed in (local users)", "signed in (OIDC)"


class UserError(ValueError):
    """A user cannot be added, found or signed in; the message says why (never the password)."""


@dataclass(frozen=True)
class Identity:
    name: str
    role: str  # reviewer | supervisor (demo: supervisor, so one person can work as before)
    mode: str  # DEMO, LOCAL or OIDC

    @property
    def may_sign_off(self) -> bool:
        return self.role == "supervisor"


def users_file() -> Path:
    return settings.review_dir() / "users.json"


def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()  # argon2id, a random salt per hash


def load(path: Path | None = None) -> dict[str, dict]:
    path = path or users_file()
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: the users file cannot be read ({e}); fix or remove it") from None
    return data.get("users", {})


def configured(path: Path | None = None) -> bool:
    """Whether sign-in is required (a users file with at least one user)."""
    return bool(load(path))


def _save(users: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"users": users, "hash": "argon2id (argon2-cffi PasswordHasher)"}, f, indent=2)
    os.replace(tmp, path)


def add(name: str, role: str, password: str, *, path: Path | None = None) -> None:
    """Add (or replace) a user. The password is hashed with a random salt; only the hash is written."""
    path = path or users_file()
    if not NAME.match(name or ""):
        raise UserError("a user name is 1-64 letters, digits, spaces or ._@- and starts with a letter or digit")
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    if len(password or "") < MIN_PASSWORD:
        raise UserError(f"the password needs at least {MIN_PASSWORD} characters")
    users = load(path)
    users[name] = {"role": role, "hash": _hasher().hash(password),
                   "created": datetime.now(UTC).isoformat(timespec="seconds")}
    _save(users, path)


def remove(name: str, *, path: Path | None = None) -> bool:
    path = path or users_file()
    users = load(path)
    if name not in users:
        return False
    del users[name]
    _save(users, path)
    return True


def sign_in(name: str, password: str, *, path: Path | None = None) -> Identity:
    """The identity of a user whose password matches; :class:`UserError` otherwise (the same message whether the
    name or the password was wrong)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    user = load(path).get(name or "")
    wrong = UserError("unknown user or wrong password")
    if user is None:
        _hasher().hash(password or "x")  # about the same time as a real check: the answer does not tell names
        raise wrong
    try:
        _hasher().verify(user["hash"], password or "")
    except (VerificationError, InvalidHashError):
        raise wrong from None
    return Identity(name, user["role"], LOCAL)


def oidc_identity(user_info: dict, *, path: Path | None = None) -> Identity:
    """The identity of a user signed in through the identity provider: the e-mail (or name) it sends; the role
    from the users file when the same name is listed there, else reviewer."""
    name = str(user_info.get("email") or user_info.get("name") or "").strip()
    if not name:
        raise UserError("the identity provider sent no e-mail or name for this user")
    role = load(path).get(name, {}).get("role", "reviewer")
    return Identity(name, role, OIDC)

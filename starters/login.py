"""`runbook login`: how the CLI gets an ID token for each approval, and where it keeps what it needs for that.

Three ways, one cache file (``$XDG_CACHE_HOME/runbook/login.json``, default ``~/.cache/runbook``; mode 0600 in a
0700 folder):

- **Vault / OpenBao** (``runbook login alice``): a userpass login with the person's own password (prompted, or
  ``--password-stdin``); the VAULT token is cached (for its lease), and every approval reads a FRESH ID token from
  ``identity/oidc/token/<role>``. The password is never stored.
- **Any OpenID Connect provider, by command** (``--token-command 'CMD'``): the command prints an ID token; it is run
  again for each approval (a token counts once per run), and its token cached for its lifetime.
- **A token given on stdin** (``--token-stdin``): cached for its lifetime. The worker accepts a token once per run,
  so a second approval in the same run needs a new token.

Tokens are never printed (except by ``runbook approve --print-signal``, whose point is to be pasted into the web UI)
nor logged.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.identity import unverified_claims

EARLY_SECONDS = 30  # a cached credential this close to its expiry counts as expired


class LoginError(Exception):
    """A login problem a person can fix; one line."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "runbook"


def cache_file() -> Path:
    return cache_dir() / "login.json"


def _write(data: dict[str, Any]) -> Path:
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    path = cache_file()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    os.chmod(path, 0o600)  # also when the file existed with a wider mode
    return path


def _read() -> dict[str, Any] | None:
    path = cache_file()
    if not path.exists():
        return None
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise LoginError(f"{path} is readable by others (mode {mode:o}): run `runbook login` again")
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise LoginError(f"{path} is damaged: run `runbook login` again") from None


def logout() -> bool:
    path = cache_file()
    if path.exists():
        path.unlink()
        return True
    return False


@dataclass(frozen=True)
class LoggedIn:
    kind: str
    user: str
    expires_at: float | None


def _token_expiry(token: str) -> float:
    exp = unverified_claims(token).get("exp")
    if not isinstance(exp, (int, float)):
        raise LoginError("that is not an ID token (a JWT with an exp claim)")
    return float(exp)


def _token_user(token: str) -> str:
    claims = unverified_claims(token)
    return str(claims.get("preferred_username") or claims.get("email") or claims.get("sub") or "?")


# ---------------------------------------------------------------------------- logging in
def login_vault(addr: str, user: str, password: str, role: str) -> LoggedIn:
    import hvac
    import hvac.exceptions

    try:
        auth = hvac.Client(url=addr).auth.userpass.login(username=user, password=password)["auth"]
    except hvac.exceptions.InvalidRequest as err:
        raise LoginError(f"Vault refused the login of {user}: {str(err).splitlines()[0]}") from None
    except Exception as err:  # noqa: BLE001 - connection problems of any kind: one line
        raise LoginError(f"cannot log in at {addr}: {type(err).__name__}: {err}") from None
    lease = int(auth.get("lease_duration") or 0)
    expires = time.time() + lease if lease else None
    _write({"kind": "vault", "addr": addr, "role": role, "user": user, "vault_token": auth["client_token"],
            "expires_at": expires})
    _mint_vault(addr, auth["client_token"], role)  # fail now, not at the first approval, if the role is unreadable
    return LoggedIn("vault", user, expires)


def login_token(token: str) -> LoggedIn:
    token = token.strip()
    expires = _token_expiry(token)
    if expires - EARLY_SECONDS <= time.time():
        raise LoginError("that ID token has expired")
    _write({"kind": "token", "token": token, "expires_at": expires, "user": _token_user(token)})
    return LoggedIn("token", _token_user(token), expires)


def login_command(command: str) -> LoggedIn:
    token = _run_command(command)
    expires = _token_expiry(token)
    _write({"kind": "command", "command": command, "token": token, "expires_at": expires, "user": _token_user(token)})
    return LoggedIn("command", _token_user(token), expires)


def _run_command(command: str) -> str:
    try:
        done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise LoginError(f"the token command failed: {err}") from None
    if done.returncode != 0:
        raise LoginError(f"the token command exited {done.returncode}: {(done.stderr or '').strip()[:200]}")
    token = done.stdout.strip()
    if token.count(".") != 2:
        raise LoginError("the token command did not print an ID token (a JWT)")
    return token


def _mint_vault(addr: str, vault_token: str, role: str) -> str:
    import hvac

    try:
        return hvac.Client(url=addr, token=vault_token).read(f"identity/oidc/token/{role}")["data"]["token"]
    except Exception as err:  # noqa: BLE001
        raise LoginError(f"cannot get an ID token from {addr} (role {role}): {type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''} - run `runbook login` again") from None


# ---------------------------------------------------------------------------- a token for one approval
def approval_token() -> tuple[str, str] | None:
    """A token for one approval and whose it is (unverified, for messages), or None when nobody logged in."""
    data = _read()
    if data is None:
        return None
    now = time.time()
    expires = data.get("expires_at")
    kind = data.get("kind")
    if kind == "vault":
        if expires is not None and expires - EARLY_SECONDS <= now:
            raise LoginError(f"your Vault login as {data.get('user')} has expired: run `runbook login` again")
        token = _mint_vault(data["addr"], data["vault_token"], data.get("role") or "approver")
    elif kind == "command":
        token = _run_command(data["command"])
        _write({**data, "token": token, "expires_at": _token_expiry(token)})
    elif kind == "token":
        if expires is None or expires - EARLY_SECONDS <= now:
            raise LoginError("your cached ID token has expired: run `runbook login --token-stdin` with a new one")
        token = data["token"]
    else:
        raise LoginError(f"{cache_file()}: unknown login kind {kind!r}: run `runbook login` again")
    return token, _token_user(token)


def gateway_token(command: str | None, vault_addr: str | None, user: str | None, password: str | None,
                  role: str) -> str | None:
    """The gateway's own service-identity token, fresh for each approval it vouches for (never cached on disk)."""
    if command:
        return _run_command(command)
    if user and password and vault_addr:
        import hvac

        vault_token = hvac.Client(url=vault_addr).auth.userpass.login(username=user, password=password)["auth"]["client_token"]
        return _mint_vault(vault_addr, vault_token, role)
    return None

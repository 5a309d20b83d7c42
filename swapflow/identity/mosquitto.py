"""Mosquitto's password and ACL files, generated from the credentials table (docker-compose mounts them,
see deploy/mosquitto.conf). Mosquitto reads them at start and on SIGHUP."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from swapflow.db.models import CabinetCredential, CredentialRole
from swapflow.identity.acl import mosquitto_acl

PASSWORD_FILE = "passwords"
ACL_FILE = "acl"


def password_file(engine: Engine) -> str:
    """`username:$7$…` lines, one per account, as `mosquitto_passwd` writes them."""
    with Session(engine) as session:
        rows = session.execute(select(CabinetCredential.username, CabinetCredential.password_hash)
                               .order_by(CabinetCredential.username)).tuples()
        return "".join(f"{username}:{password_hash}\n" for username, password_hash in rows)


def service_usernames(engine: Engine) -> list[str]:
    """The service accounts in the table."""
    with Session(engine) as session:
        return list(session.scalars(select(CabinetCredential.username)
                                    .where(CabinetCredential.role == CredentialRole.SERVICE)
                                    .order_by(CabinetCredential.username)))


def write_mosquitto_files(engine: Engine, directory: Path, prefix: str) -> tuple[Path, Path]:
    """(Re)write `passwords` and `acl` in `directory`; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    passwords, acl = directory / PASSWORD_FILE, directory / ACL_FILE
    _write_private(passwords, password_file(engine))
    _write_private(acl, mosquitto_acl(prefix, service_usernames(engine)))
    return passwords, acl


def _write_private(path: Path, text: str) -> None:
    # Written aside and renamed: Mosquitto re-reading on SIGHUP never sees half a file.
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    temporary.replace(path)

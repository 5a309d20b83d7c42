"""Mosquitto's password and ACL files, generated from the credentials table (docker-compose mounts them,
see deploy/mosquitto.conf). Mosquitto reads them at start and on SIGHUP.

Cabinets and the platform's services log in on separate listeners (`listeners` writes both): the
cabinets' listener knows only cabinets and replaces each one's client id with its username (its id), so
no cabinet can take over another client's session; the services' listener knows only the services and
stays on the private network."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from swapflow.db.identity import CabinetCredential
from swapflow.domain.network import CredentialRole
from swapflow.identity.acl import mosquitto_acl

PASSWORD_FILE = "passwords"
SERVICE_PASSWORD_FILE = "service-passwords"
ACL_FILE = "acl"


def password_file(engine: Engine, role: CredentialRole = CredentialRole.CABINET) -> str:
    """`username:$7$…` lines, one per account of `role`, as `mosquitto_passwd` writes them."""
    with Session(engine) as session:
        rows = session.execute(
            select(CabinetCredential.username, CabinetCredential.password_hash)
            .where(CabinetCredential.role == role)
            .order_by(CabinetCredential.username)
        ).tuples()
        return "".join(f"{username}:{password_hash}\n" for username, password_hash in rows)


def service_usernames(engine: Engine) -> list[str]:
    """The service accounts in the table."""
    with Session(engine) as session:
        return list(
            session.scalars(
                select(CabinetCredential.username)
                .where(CabinetCredential.role == CredentialRole.SERVICE)
                .order_by(CabinetCredential.username)
            )
        )


def write_mosquitto_files(engine: Engine, directory: Path, prefix: str) -> tuple[Path, Path]:
    """(Re)write `passwords` (cabinets), `service-passwords` and `acl` in `directory`; returns the paths
    of the cabinets' passwords and of the ACL."""
    directory.mkdir(parents=True, exist_ok=True)
    passwords, acl = directory / PASSWORD_FILE, directory / ACL_FILE
    _write_private(passwords, password_file(engine))
    _write_private(directory / SERVICE_PASSWORD_FILE, password_file(engine, CredentialRole.SERVICE))
    _write_private(acl, mosquitto_acl(prefix, service_usernames(engine)))
    return passwords, acl


def listeners(directory: Path | str, device_listener: str, service_listener: str) -> str:
    """The listener sections of a mosquitto.conf using the files in `directory` (as seen by Mosquitto):
    cabinets on `device_listener` ("port [address]"), the platform's services on `service_listener`.
    deploy/mosquitto.conf holds the same, for the compose stack."""
    return (
        "per_listener_settings true\n"
        f"listener {device_listener}\nallow_anonymous false\nuse_username_as_clientid true\n"
        f"password_file {directory}/{PASSWORD_FILE}\nacl_file {directory}/{ACL_FILE}\n"
        f"listener {service_listener}\nallow_anonymous false\n"
        f"password_file {directory}/{SERVICE_PASSWORD_FILE}\nacl_file {directory}/{ACL_FILE}\n"
    )


def _write_private(path: Path, text: str) -> None:
    # Written aside and renamed: Mosquitto re-reading on SIGHUP never sees half a file.
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    temporary.replace(path)

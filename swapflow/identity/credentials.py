"""Credentials in the database: provisioning a cabinet (a fresh secret, shown once), the services'
account, and what each platform client connects with.

The embedded stack needs no operator to hand out secrets: a random stack secret, kept in the data
folder (mode 0600), derives the service account's password and each *simulated* cabinet's, so the
processes `swapflow up` starts and the simulator find them without a secrets file per cabinet. A real
cabinet gets a random secret from `swapflow cabinets provision`, printed once and stored only hashed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from swapflow.db.identity import CabinetCredential
from swapflow.db.network import Cabinet
from swapflow.domain.clock import utcnow
from swapflow.domain.network import CabinetProtocol, CredentialRole
from swapflow.identity.passwords import hash_password, new_secret, verify_password
from swapflow.settings import Settings

_STACK_SECRET_FILE = "mqtt-stack-secret"

SERVICE_CLIENT_ID_PREFIX = "swapflow-"
"""Every platform client's MQTT client id starts with this, and no cabinet may be named so: a cabinet
connects only under its own id (the brokers enforce it), so it can never take a platform client's session."""


class ProvisioningError(ValueError):
    """A cabinet cannot be provisioned (unknown, or its id is taken by a service account)."""


@dataclass(frozen=True)
class Login:
    """A username and password to connect to the broker with."""

    username: str
    password: str


def stack_secret(settings: Settings) -> bytes:
    """The embedded stack's secret, created on first use (readable by its owner only)."""
    return kept_secret(settings, _STACK_SECRET_FILE)


def kept_secret(settings: Settings, name: str) -> bytes:
    """A random 32-byte secret kept in the data folder under `name`, created on first use (mode 0600)."""
    path = settings.data_dir / name
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_bytes(32)
    try:
        # O_EXCL: of processes starting at once, one writes the secret and the others read it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_when_written(path)
    with os.fdopen(fd, "w") as out:
        out.write(value.hex())
    return value


def _read_when_written(path: Path) -> bytes:
    for _ in range(200):
        text = path.read_text().strip()
        if len(text) == 64:
            return bytes.fromhex(text)
        time.sleep(0.01)  # another process has created the file and is about to write it
    raise RuntimeError(f"{path} holds no secret")


def _derived(settings: Settings, purpose: str) -> str:
    return hmac.new(stack_secret(settings), purpose.encode(), hashlib.sha256).hexdigest()


def authenticates(settings: Settings) -> bool:
    """Whether clients log in: on the embedded broker, and on an external one whose URL carries a user.
    (An external broker without one, like CI's anonymous Mosquitto, is used anonymously.)"""
    return settings.mqtt.url is None or bool(settings.mqtt_endpoint.username)


def service_login(settings: Settings) -> Login:
    """What the platform's services connect as: the user:pass of SWAPFLOW_MQTT_URL when it carries one,
    otherwise the service account with its password derived from the stack secret."""
    endpoint = settings.mqtt_endpoint
    if endpoint.username:
        return Login(endpoint.username, endpoint.password or "")
    return Login(settings.mqtt.service_username, _derived(settings, f"service:{settings.mqtt.service_username}"))


def simulated_cabinet_login(settings: Settings, cabinet_id: str) -> Login:
    """What a simulated cabinet connects as: its id, with a password derived from the stack secret."""
    return Login(cabinet_id, _derived(settings, f"cabinet:{cabinet_id}"))


def service_client_id(identifier: str) -> str:
    """`identifier` within the platform's reserved client ids."""
    return identifier if identifier.startswith(SERVICE_CLIENT_ID_PREFIX) else SERVICE_CLIENT_ID_PREFIX + identifier


def client_login(settings: Settings, cabinet_id: str | None = None) -> Login | None:
    """The login of a platform client (a service, or the simulated cabinet `cabinet_id`), or None to
    connect anonymously."""
    if not authenticates(settings):
        return None
    return service_login(settings) if cabinet_id is None else simulated_cabinet_login(settings, cabinet_id)


def provision_cabinet(session: Session, cabinet_id: str, *, rotate: bool = True) -> str | None:
    """Give the cabinet fresh credentials (username = its id) and return the secret, which is stored only
    hashed. An existing secret is replaced when `rotate`; otherwise it is kept and None returned."""
    _check_not_reserved(cabinet_id)
    if session.get(Cabinet, cabinet_id) is None:
        raise ProvisioningError(f"unknown cabinet {cabinet_id!r}")
    secret = new_secret()
    if not _set_cabinet_hash(session, cabinet_id, hash_password(secret), rotate=rotate):
        return None
    return secret


def _check_not_reserved(cabinet_id: str) -> None:
    if cabinet_id.startswith(SERVICE_CLIENT_ID_PREFIX):
        raise ProvisioningError(f"{cabinet_id!r}: client ids starting {SERVICE_CLIENT_ID_PREFIX!r} are the platform's")


def _set_cabinet_hash(session: Session, cabinet_id: str, password_hash: str, *, rotate: bool) -> bool:
    _check_not_reserved(cabinet_id)
    existing = session.get(CabinetCredential, cabinet_id)
    if existing is not None and existing.role != CredentialRole.CABINET:
        raise ProvisioningError(f"{cabinet_id!r} is a service account's name")
    if existing is None:
        session.add(
            CabinetCredential(
                username=cabinet_id, cabinet_id=cabinet_id, role=CredentialRole.CABINET, password_hash=password_hash
            )
        )
        return True
    if not rotate:
        return False
    existing.password_hash = password_hash
    existing.rotated_at = utcnow()
    return True


def ensure_service_account(session: Session, login: Login) -> None:
    """The service account exists with this password (rotated when it no longer matches)."""
    existing = session.get(CabinetCredential, login.username)
    if existing is None:
        session.add(
            CabinetCredential(
                username=login.username,
                cabinet_id=None,
                role=CredentialRole.SERVICE,
                password_hash=hash_password(login.password),
            )
        )
    elif not verify_password(login.password, existing.password_hash):
        existing.password_hash = hash_password(login.password)
        existing.rotated_at = utcnow()


def provision_embedded_stack(engine: Engine, settings: Settings) -> int:
    """What `swapflow up` does at seed time: the service account, and credentials derived from the
    stack secret for every cabinet that has none yet (the simulator's). Returns how many it created."""
    created = 0
    with Session(engine) as session, session.begin():
        ensure_service_account(session, service_login(settings))
        have = set(session.scalars(select(CabinetCredential.cabinet_id)))
        for cabinet_id in session.scalars(select(Cabinet.id).order_by(Cabinet.id)):
            if cabinet_id not in have:
                login = simulated_cabinet_login(settings, cabinet_id)
                _set_cabinet_hash(session, cabinet_id, hash_password(login.password), rotate=False)
                created += 1
    return created


def check_login(session: Session, username: str, password: str) -> CredentialRole | None:
    """The account's role when the password is right, else None."""
    credential = session.get(CabinetCredential, username)
    if credential is None or not verify_password(password, credential.password_hash):
        return None
    return CredentialRole(credential.role)


def provision_simulated_tower_cabinets(engine: Engine, settings: Settings) -> int:
    """Credentials derived from the stack secret for every tower cabinet that has none yet. The gateway
    asks each tower cabinet for its secret even where the broker takes anonymous clients (CI's
    Mosquitto), so `swapflow up` gives the simulated ones theirs either way. Returns how many it created."""
    created = 0
    with Session(engine) as session, session.begin():
        have = set(session.scalars(select(CabinetCredential.cabinet_id)))
        towers = select(Cabinet.id).where(Cabinet.protocol == CabinetProtocol.TOWER).order_by(Cabinet.id)
        for cabinet_id in session.scalars(towers):
            if cabinet_id not in have:
                login = simulated_cabinet_login(settings, cabinet_id)
                _set_cabinet_hash(session, cabinet_id, hash_password(login.password), rotate=False)
                created += 1
    return created

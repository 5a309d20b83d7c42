"""amqtt plugins that make the embedded broker check device identity: `CredentialsAuthPlugin` refuses a
client whose username and password are not in the credentials table, or whose client id is not its own
(a cabinet's is its id; a service's carries the platform's prefix), and `CabinetTopicPlugin` keeps
each cabinet to its own topics (swapflow.identity.acl). Both are configured through amqtt's
plugin `Config` dataclasses (see `broker_config`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from amqtt.contexts import Action, BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session
from sqlalchemy.orm import Session as DbSession

from swapflow.db.engine import create_sync_engine
from swapflow.domain.network import CredentialRole
from swapflow.identity.acl import Access, cabinet_may, service_may
from swapflow.identity.credentials import SERVICE_CLIENT_ID_PREFIX, check_login

_ACCESS = {Action.PUBLISH: Access.PUBLISH, Action.SUBSCRIBE: Access.SUBSCRIBE, Action.RECEIVE: Access.RECEIVE}


def _may_use(role: CredentialRole, username: str, client_id: str) -> bool:
    """Whether the account may connect under `client_id`: a cabinet only as itself, a service only
    within the platform's prefix."""
    if role is CredentialRole.CABINET:
        return client_id == username
    return client_id.startswith(SERVICE_CLIENT_ID_PREFIX)


class CredentialsAuthPlugin(BaseAuthPlugin):
    """A client connects only with a username and the right password from `cabinet_credentials`, under
    the client id its identity allows: amqtt hands an existing session to whoever connects with its
    client id, so a cabinet claiming another's id would silently take that client's messages."""

    @dataclass
    class Config:
        database_url: str = ""

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self._engine = create_sync_engine(self.config.database_url)

    async def authenticate(self, *, session: Session) -> bool | None:
        """True for a known account with its password; False for anything else."""
        if not session or not session.username:
            return False
        username, password = session.username, session.password or ""
        try:
            role = await asyncio.to_thread(self._check, username, password)
        except Exception:  # noqa: BLE001 - the table may not exist yet while `swapflow up` migrates
            self.context.logger.warning("cannot check credentials of %r", username, exc_info=True)
            return False
        if role is None:
            self.context.logger.info("refused MQTT login of %r", username)
            return False
        client_id = session.client_id or ""
        if not _may_use(role, username, client_id):
            self.context.logger.warning("refused MQTT login of %r claiming client id %r", username, client_id)
            return False
        return True

    def _check(self, username: str, password: str) -> CredentialRole | None:
        with DbSession(self._engine) as db:
            return check_login(db, username, password)

    async def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()


class CabinetTopicPlugin(BaseTopicPlugin):
    """Service accounts use every topic under the prefix; anyone else is a cabinet named by its
    username and limited to its own topics."""

    @dataclass
    class Config:
        topic_prefix: str = "swapflow/v1"
        service_usernames: list[str] = field(default_factory=list)

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool | None:
        """Whether the session may do `action` on `topic`."""
        if session is None or not session.username or topic is None or action not in _ACCESS:
            return False
        prefix: str = self.config.topic_prefix
        if session.username in self.config.service_usernames:
            return service_may(prefix, topic)
        return cabinet_may(prefix, session.username, _ACCESS[action], topic)


def auth_plugins(database_url: str, topic_prefix: str, service_usernames: list[str]) -> dict[str, Any]:
    """The `plugins` section of an amqtt config that enforces device identity."""
    return {
        f"{__name__}.CredentialsAuthPlugin": {"database_url": database_url},
        f"{__name__}.CabinetTopicPlugin": {"topic_prefix": topic_prefix, "service_usernames": service_usernames},
    }

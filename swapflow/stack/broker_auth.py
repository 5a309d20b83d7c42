"""amqtt plugins that make the embedded broker check device identity: `CredentialsAuthPlugin` refuses a
client whose username and password are not in the credentials table, and `CabinetTopicPlugin` keeps
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
from swapflow.db.models import CredentialRole
from swapflow.identity.acl import Access, cabinet_may, service_may
from swapflow.identity.credentials import check_login

_ACCESS = {Action.PUBLISH: Access.PUBLISH, Action.SUBSCRIBE: Access.SUBSCRIBE, Action.RECEIVE: Access.RECEIVE}


class CredentialsAuthPlugin(BaseAuthPlugin):
    """A client connects only with a username and the right password from `cabinet_credentials`."""

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
        return role is not None

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

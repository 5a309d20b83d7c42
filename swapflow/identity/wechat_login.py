"""WeChat mini-program login: the `code` a mini-program gets from `wx.login()` is exchanged at WeChat's
`jscode2session` for the user's `openid` (and `unionid` when the app is bound to an open platform account).
The `session_key` it also answers is not kept: nothing here decrypts the mini-program's user data."""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx

CODE_INVALID = frozenset({40029, 40163})
"""errcodes of a code that is not (or no longer) good: invalid, already used."""
BUSY = frozenset({-1, 45011})
"""errcodes of a WeChat that cannot answer now: system busy, too many requests."""


@dataclass(frozen=True)
class WeChatSession:
    openid: str
    unionid: str | None


class WeChatLoginRefused(Exception):
    """WeChat answered with an error code (errcode ≠ 0)."""

    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"WeChat errcode {errcode}: {errmsg}")
        self.errcode, self.errmsg = errcode, errmsg


class WeChatUnreachable(Exception):
    """No usable answer from WeChat: the network, a timeout, or an answer that is not code2session's."""


async def code_to_session(
    api_base: str, appid: str, secret: str, js_code: str, *, timeout_s: float = 10.0
) -> WeChatSession:
    """Exchange a `wx.login()` code for the user's openid (GET /sns/jscode2session)."""
    params = {"appid": appid, "secret": secret, "js_code": js_code, "grant_type": "authorization_code"}
    try:
        async with httpx.AsyncClient(base_url=api_base, timeout=timeout_s) as client:
            response = await client.get("/sns/jscode2session", params=params)
    except httpx.HTTPError as error:
        raise WeChatUnreachable(f"code2session: {type(error).__name__}") from None
    if response.status_code != 200:
        raise WeChatUnreachable(f"code2session answered HTTP {response.status_code}")
    try:
        # WeChat labels this JSON text/plain: parse the body whatever its content type.
        answer = json.loads(response.text)
    except ValueError:
        raise WeChatUnreachable("code2session answered something that is not JSON") from None
    if not isinstance(answer, dict):
        raise WeChatUnreachable("code2session answered something that is not a JSON object")
    errcode = answer.get("errcode") or 0
    if not isinstance(errcode, int):
        raise WeChatUnreachable("code2session answered an errcode that is not a number")
    if errcode != 0:
        raise WeChatLoginRefused(errcode, str(answer.get("errmsg", "")))
    openid, unionid = answer.get("openid"), answer.get("unionid")
    if not isinstance(openid, str) or not openid:
        raise WeChatUnreachable("code2session answered no openid")
    return WeChatSession(openid=openid, unionid=unionid if isinstance(unionid, str) and unionid else None)

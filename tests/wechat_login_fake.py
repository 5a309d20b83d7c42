"""A local fake of WeChat's mini-program login endpoint, `GET /sns/jscode2session`, as a real HTTP server.

It answers as WeChat does: a JSON body labelled text/plain, `errcode` 40029 for a code it never issued
(or a wrong app id or secret: 40013 / 40125), 40163 for a code used already, and the user's `openid` and
`session_key` (and `unionid` when the user has one) for a good code, once. `code_for(openid)` plays the
mini-program's `wx.login()`; `fail_next(errcode, errmsg)` answers the next request with that error.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

APPID = "wx0123456789abcdef"
SECRET = "fake-mini-program-secret"


@dataclass
class Issued:
    openid: str
    unionid: str | None
    used: bool = False


class WeChatLoginFake:
    """The fake server. `start()` / `stop()`; `settings_changes()` points swapflow's settings at it."""

    def __init__(self) -> None:
        self.codes: dict[str, Issued] = {}
        self.requests: list[dict[str, str]] = []
        self._failures: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def settings_changes(self) -> dict[str, Any]:
        """`Settings.updated(**...)` arguments of a platform whose mini-program signs in here."""
        return {"wechat": {"appid": APPID}, "rider_auth": {"wechat_secret": SECRET, "wechat_api_base": self.url}}

    def code_for(self, openid: str, unionid: str | None = None) -> str:
        """What `wx.login()` gives the mini-program of the WeChat user `openid`: a fresh single-use code."""
        code = secrets.token_hex(16)
        with self._lock:
            self.codes[code] = Issued(openid, unionid)
        return code

    def fail_next(self, errcode: int, errmsg: str) -> None:
        self._failures.append({"errcode": errcode, "errmsg": errmsg})

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        with self._lock:
            self.requests.append(query)
            answer = self._answer(parts.path, query)
        body = json.dumps(answer).encode()
        handler.send_response(200)  # WeChat answers its errors with 200 too
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _answer(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        if path != "/sns/jscode2session":
            return {"errcode": 40066, "errmsg": "invalid url"}
        if self._failures:
            return self._failures.pop(0)
        if query.get("appid") != APPID:
            return {"errcode": 40013, "errmsg": "invalid appid"}
        if query.get("secret") != SECRET:
            return {"errcode": 40125, "errmsg": "invalid appsecret"}
        if query.get("grant_type") != "authorization_code":
            return {"errcode": 40002, "errmsg": "invalid grant_type"}
        issued = self.codes.get(query.get("js_code", ""))
        if issued is None:
            return {"errcode": 40029, "errmsg": "invalid code"}
        if issued.used:
            return {"errcode": 40163, "errmsg": "code been used"}
        issued.used = True
        answer = {"openid": issued.openid, "session_key": secrets.token_urlsafe(16)}
        if issued.unionid:
            answer["unionid"] = issued.unionid
        return answer


@pytest.fixture
def wechat_login() -> Iterator[WeChatLoginFake]:
    fake = WeChatLoginFake()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()

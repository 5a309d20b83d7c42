"""The console as a test drives it: a client over https (the session cookie is Secure, and the client
sends it back only over https), and signing in through the sign-in form with its CSRF token."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient

from swapflow.api.app import create_app
from swapflow.settings import Settings


@contextmanager
def console_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url="https://testserver", follow_redirects=False) as client:
        yield client


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "the page has no CSRF field"
    return found.group(1)


def sign_in(client: TestClient, token: str) -> str:
    """Signs in; the session's CSRF token."""
    form = client.get("/console/sign-in")
    answer = client.post("/console/sign-in", data={"token": token, "csrf_token": csrf_of(form.text)})
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get("/console/network").text)

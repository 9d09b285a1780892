"""Shared set-up of the Python SDK suites: the official `mistralai` package (1.9.x or 3.x,
whichever this virtualenv holds) pointed at a palaver that `tests/sdk/run` started."""

import importlib.metadata
import json
import os
import urllib.request
import uuid

import pytest

SDK_VERSION = importlib.metadata.version("mistralai")
SDK_MAJOR = int(SDK_VERSION.split(".")[0])

if SDK_MAJOR >= 2:
    from mistralai.client import Mistral
    from mistralai.client.errors import HTTPValidationError, SDKError
else:
    from mistralai import Mistral
    from mistralai.models import HTTPValidationError, SDKError

URL = os.environ["PALAVER_URL"]
KEY = os.environ["PALAVER_KEY"]
OTHER_KEY = os.environ["PALAVER_OTHER_KEY"]

modern_only = pytest.mark.skipif(SDK_MAJOR < 2, reason="the operation does not exist in mistralai 1.x")

__all__ = ["Mistral", "HTTPValidationError", "SDKError", "SDK_MAJOR", "modern_only"]


def make_client(key=KEY):
    return Mistral(api_key=key, server_url=URL)


@pytest.fixture
def client():
    return make_client()


@pytest.fixture
def other_client():
    return make_client(OTHER_KEY)


@pytest.fixture
def unique():
    """A name no other test uses, so tests sharing one server never see each other's rows."""
    return f"sdk-{SDK_MAJOR}-{uuid.uuid4().hex[:12]}"


CONTROL = os.environ["PALAVER_UPSTREAM_CONTROL"]


def _control(method, path, payload=None):
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(CONTROL + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


class Upstream:
    """The scripted model server behind palaver (see tests/sdk/fake_upstream.py)."""

    def script(self, *replies):
        _control("POST", "/control/script", list(replies))

    def requests(self):
        return _control("GET", "/control/requests")

    def last_request(self):
        return self.requests()[-1]

    def mcp_calls(self):
        """The tool calls palaver's `orders` connector made."""
        return _control("GET", "/control/mcp-calls")


@pytest.fixture
def upstream():
    _control("POST", "/control/reset", {})
    yield Upstream()
    _control("POST", "/control/reset", {})


# Fields the contract says to always send even where the SDKs would default them
# (what the official SDKs send). A response parsed without them still validates,
# so the suites check they were on the wire: dropping one must fail the suites.
ALWAYS_SENT = ("object", "type", "id", "created_at")


def assert_complete(value, path="response"):
    """Walks a parsed SDK object; every always-sent field its model declares must have been
    present in the JSON (pydantic records that in `model_fields_set`)."""
    fields = getattr(type(value), "model_fields", None)
    if fields is not None:
        for name in ALWAYS_SENT:
            if name in fields:
                assert name in value.model_fields_set, f"`{path}.{name}` was not sent by palaver"
        for name in value.model_fields_set:
            assert_complete(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            assert_complete(item, f"{path}[{index}]")

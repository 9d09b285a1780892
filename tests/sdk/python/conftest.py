"""Shared set-up of the Python SDK suites: the official `mistralai` package (1.9.x or 3.x,
whichever this virtualenv holds) pointed at a palaver that `tests/sdk/run` started."""

import importlib.metadata
import os
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

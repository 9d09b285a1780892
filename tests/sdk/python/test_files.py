"""The Files API through the official Python SDK: upload, list, retrieve, download (the
streamed response's `.read()`), signed URL, delete, and another key's 404."""

import urllib.request

import pytest

from conftest import SDKError, assert_complete, modern_only

CONTENT = bytes(range(256)) * 4096 + b"tail"


def upload(client, name, content=CONTENT):
    return client.files.upload(file={"file_name": name, "content": content}, purpose="ocr")


def test_an_upload_lists_retrieves_and_downloads_byte_for_byte(client, unique):
    name = f"{unique}.bin"

    uploaded = upload(client, name)

    assert_complete(uploaded)
    assert uploaded.filename == name
    assert uploaded.size_bytes == len(CONTENT)
    assert uploaded.purpose == "ocr"
    assert isinstance(uploaded.created_at, int)
    retrieved = client.files.retrieve(file_id=uploaded.id)
    assert retrieved.id == uploaded.id
    assert retrieved.deleted is False
    listed = client.files.list(page=0, page_size=100)
    assert uploaded.id in [f.id for f in listed.data]
    assert listed.total >= 1
    assert len(client.files.list(page=0, page_size=1).data) == 1
    found = client.files.list(search=unique, purpose="ocr", source=["upload"])
    assert [f.id for f in found.data] == [uploaded.id]
    assert found.total == 1
    downloaded = client.files.download(file_id=uploaded.id)
    assert downloaded.headers["content-type"] == "application/octet-stream"
    assert downloaded.read() == CONTENT


def test_a_signed_url_downloads_without_a_key(client, unique):
    uploaded = upload(client, f"{unique}.png", b"\x89PNG not really")

    signed = client.files.get_signed_url(file_id=uploaded.id, expiry=2)

    with urllib.request.urlopen(signed.url, timeout=10) as response:
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.read() == b"\x89PNG not really"


def test_a_deleted_file_is_gone(client, unique):
    uploaded = upload(client, f"{unique}.txt", b"soon gone")

    deleted = client.files.delete(file_id=uploaded.id)

    assert deleted.id == uploaded.id
    assert deleted.deleted is True
    with pytest.raises(SDKError) as error:
        client.files.retrieve(file_id=uploaded.id)
    assert error.value.status_code == 404


def test_another_keys_file_is_a_404(client, other_client, unique):
    uploaded = upload(client, f"{unique}.txt", b"mine")

    with pytest.raises(SDKError) as error:
        other_client.files.retrieve(file_id=uploaded.id)

    assert error.value.status_code == 404
    assert "not_found" in error.value.body
    assert uploaded.id not in [f.id for f in other_client.files.list(page_size=100).data]


@modern_only
def test_the_expiry_and_visibility_of_3x_are_kept(client, unique):
    uploaded = client.files.upload(
        file={"file_name": f"{unique}.txt", "content": b"short-lived"}, purpose="ocr", expiry=48, visibility="user"
    )

    assert uploaded.visibility == "user"
    assert uploaded.expires_at - uploaded.created_at == 48 * 3600
    assert client.files.retrieve(file_id=uploaded.id).visibility == "user"

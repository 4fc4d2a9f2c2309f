"""One contract for the object store's adapters: the local folder and S3 (a versioned,
KMS-encrypted bucket on moto in server mode). A document is written once: a second put of the
same key, same or different bytes, concurrent or not, is refused and keeps the first document
(on S3: one version only)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from marketplace_platform.mailer import OutgoingEmail
from marketplace_platform.mailer.local import LocalOutboxMailer
from marketplace_platform.mailer.ses import SesMailer
from marketplace_platform.object_store import ObjectStore
from marketplace_platform.object_store.local import LocalObjectStore
from marketplace_platform.object_store.s3 import S3ObjectStore


def boto3_client(service: str, endpoint: str) -> Any:
    import boto3  # type: ignore[import-untyped]

    return boto3.client(service, region_name="us-east-1", endpoint_url=endpoint)


@pytest.fixture
def s3(moto_endpoint: str, aws_credentials: None) -> Any:
    return boto3_client("s3", moto_endpoint)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "store")
    s3 = request.getfixturevalue("s3")
    kms = boto3_client("kms", request.getfixturevalue("moto_endpoint"))
    key_id = kms.create_key(Description="documents")["KeyMetadata"]["KeyId"]
    bucket = f"documents-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return S3ObjectStore(s3, bucket, prefix="env", kms_key_id=key_id)


async def versions(store: ObjectStore, key: str) -> int:
    """How many versions of the key exist (a file has one)."""
    if isinstance(store, S3ObjectStore):
        listed = await asyncio.to_thread(
            store._client.list_object_versions, Bucket=store.bucket, Prefix=f"env/{key}"
        )
        return len(listed.get("Versions", []))
    return 1 if await store.get(key) is not None else 0


async def test_a_new_key_is_stored_and_read_back(store: ObjectStore) -> None:
    put = await store.put_if_absent("invoices/o-1.json", b'{"total":1}', content_type="x/json")

    assert put.created
    assert await store.get("invoices/o-1.json") == b'{"total":1}'
    assert await store.keys("invoices/") == ["invoices/o-1.json"]
    assert await store.get("invoices/missing.json") is None


async def test_rewriting_a_document_is_refused_and_the_first_is_kept(store: ObjectStore) -> None:
    key = "invoices/o-2.json"
    first = await store.put_if_absent(key, b"first", content_type="text/plain")
    same = await store.put_if_absent(key, b"first", content_type="text/plain")
    other = await store.put_if_absent(key, b"second", content_type="text/plain")

    assert (first.created, same.created, other.created) == (True, False, False)
    assert await store.get(key) == b"first"
    assert await versions(store, key) == 1


async def test_racing_writers_of_one_key_leave_one_document(store: ObjectStore) -> None:
    key = "invoices/o-3.json"
    bodies = [f"writer {n}".encode() for n in range(8)]

    results = await asyncio.gather(
        *(store.put_if_absent(key, body, content_type="text/plain") for body in bodies)
    )

    winners = [r for r in results if r.created]
    assert len(winners) == 1
    assert await store.get(key) == bodies[results.index(winners[0])]
    assert await versions(store, key) == 1


async def test_keys_that_could_escape_are_refused(store: ObjectStore) -> None:
    for key in ("../escape", "/absolute", "a//b", ""):
        with pytest.raises(ValueError, match="invalid object key"):
            await store.put_if_absent(key, b"x", content_type="text/plain")


async def test_the_local_mailer_writes_one_file_per_message_id(tmp_path: Path) -> None:
    mailer = LocalOutboxMailer(tmp_path / "outbox")
    message = OutgoingEmail(
        message_id="order-1-confirmation", sender="shop@example.com",
        recipient="ada@example.com", subject="Confirmed", text_body="Thanks\n",
    )  # fmt: skip

    results = [await mailer.send(message) for _ in range(3)]

    assert [r.sent for r in results] == [True, False, False]
    (sent,) = mailer.sent()
    assert b"Message-ID: <order-1-confirmation@marketplace.local>" in sent.read_bytes()


@pytest.mark.usefixtures("aws_credentials")
async def test_the_ses_mailer_sends_through_ses(moto_endpoint: str) -> None:
    ses = boto3_client("sesv2", moto_endpoint)
    ses.create_email_identity(EmailIdentity="shop@example.com")
    mailer = SesMailer(ses)
    message = OutgoingEmail(
        message_id="order-2-confirmation", sender="shop@example.com",
        recipient="ada@example.com", subject="Confirmed", text_body="Thanks\n",
    )  # fmt: skip

    result = await mailer.send(message)

    assert result.sent
    assert result.provider_id

"""The Glue table of storage.yaml against what the analytics consumer really writes: its
handler and sink, configured from the task definition's ANALYTICS_SINK_URL, write events to S3
(moto); the objects lie under the table's location in its `dt=` partitions, and each record's
keys are the table's columns, with values the column types (and the JSON SerDe) can read."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest

from marketplace_platform.event_bus import unpack_payload
from tests.support.events import order_cancelled, order_placed, payment_refunded
from tools import deployer
from tools.deployer import tasks
from workers.consumers.analytics.bootstrap import open_sink
from workers.consumers.analytics.handlers import handlers
from workers.consumers.consumer import DeliveredEvent

# Columns declared `string` whose value is a JSON object: the OpenX JSON SerDe hands a string
# column a nested object's JSON text (Athena queries it with json_extract).
NESTED_AS_JSON_TEXT = {"data"}


class _NoInbox:
    """The unit of work a handler gets, without its inbox session (the sink then writes once)."""

    session = None


def _table() -> dict[str, Any]:
    storage = deployer.load_template(deployer.TEMPLATES_DIR / "storage.yaml")
    table: dict[str, Any] = storage["Resources"]["OrderFactsTable"]["Properties"]["TableInput"]
    return table


def _sink_url(bucket: str) -> str:
    (consumer,) = [d for d in deployer.DEPLOYABLES if "write_exports" in d.permissions]
    (app, *_) = tasks.task_definition(consumer)["Properties"]["ContainerDefinitions"]
    env = {variable["Name"]: variable["Value"] for variable in app["Environment"]}
    url: str = env["ANALYTICS_SINK_URL"]["Fn::Sub"].replace("${ExportBucketName}", bucket)
    return url


@pytest.fixture
def bucket(moto_endpoint: str, aws_credentials: None, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    name = f"exports-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3")
    region = s3.meta.region_name
    location = {} if region == "us-east-1" else {"LocationConstraint": region}
    s3.create_bucket(Bucket=name, **({"CreateBucketConfiguration": location} if location else {}))
    return name


async def test_a_written_fact_has_the_glue_table_s_columns_under_its_partition(
    bucket: str,
) -> None:
    sink = open_sink(_sink_url(bucket))
    record = handlers(sink)
    envelopes = [order_placed("order-1"), order_cancelled("order-1"), payment_refunded("order-1")]
    events = [DeliveredEvent(envelope, unpack_payload(envelope)) for envelope in envelopes]
    for event in events:
        await record[event.event_type](event, _NoInbox())  # type: ignore[arg-type]

    table = _table()
    location = table["StorageDescriptor"]["Location"]["Fn::Sub"].replace("${ExportBucket}", bucket)
    template = table["Parameters"]["storage.location.template"]["Fn::Sub"]
    template = template.replace("${ExportBucket}", bucket).replace("${!dt}", "{dt}")
    prefix = location.removeprefix(f"s3://{bucket}/")
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    columns = {c["Name"]: c["Type"] for c in table["StorageDescriptor"]["Columns"]}
    (partition_key,) = table["PartitionKeys"]
    records = []
    for key in keys:
        directory = key.rpartition("/")[0] + "/"
        dt = directory.removeprefix(prefix).removeprefix(f"{partition_key['Name']}=").rstrip("/")
        assert f"s3://{bucket}/{directory}" == template.format(dt=dt), key
        datetime.strptime(dt, "%Y-%m-%d")  # the projection's yyyy-MM-dd
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        for line in body.splitlines():
            fact = json.loads(line)
            assert fact["occurred_at"].startswith(dt), "a fact lies in the partition of its day"
            records.append(fact)

    assert len(records) == len(events)
    for fact in records:
        assert set(fact) == set(columns), sorted(fact)
        for name, kind in columns.items():
            assert kind == "string", name
            if name in NESTED_AS_JSON_TEXT:
                assert isinstance(fact[name], dict), name
            else:
                assert isinstance(fact[name], str), name
    assert partition_key["Name"] not in columns
    assert {fact["fact_id"] for fact in records} == {str(e.event_id) for e in events}

"""Where the analytics consumer writes and where Athena reads agree: the deployer's
ANALYTICS_SINK_URL plus the sink's `order_facts/dt=` layout is the Glue table's location, the
table's columns are the fields of a fact, and the local stack writes the same layout under
its data folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from local_supervisor.stack import local_outputs
from marketplace_platform.event_bus import unpack_payload
from tests.support.events import order_placed
from tools import deployer
from tools.deployer import tasks
from workers.consumers.analytics.bootstrap import AnalyticsSettings
from workers.consumers.analytics.handlers import fact_of
from workers.consumers.consumer import DeliveredEvent


def order_facts_table() -> dict[str, Any]:
    storage = deployer.load_template(deployer.TEMPLATES_DIR / "storage.yaml")
    table: dict[str, Any] = storage["Resources"]["OrderFactsTable"]["Properties"]["TableInput"]
    return table


def analytics_environment() -> dict[str, Any]:
    (consumer,) = [d for d in deployer.DEPLOYABLES if "write_exports" in d.permissions]
    (app, *_) = tasks.task_definition(consumer)["Properties"]["ContainerDefinitions"]
    return {variable["Name"]: variable["Value"] for variable in app["Environment"]}


def test_the_consumer_writes_where_the_glue_table_reads() -> None:
    sink_url = analytics_environment()["ANALYTICS_SINK_URL"]["Fn::Sub"]
    table = order_facts_table()
    # The services stack gets the storage stack's ExportBucket as ExportBucketName.
    written = sink_url.replace("${ExportBucketName}", "${ExportBucket}") + "/order_facts/"

    assert table["StorageDescriptor"]["Location"] == {"Fn::Sub": written}
    assert table["Parameters"]["storage.location.template"] == {"Fn::Sub": written + "dt=${!dt}/"}
    assert [key["Name"] for key in table["PartitionKeys"]] == ["dt"]
    assert analytics_environment()["ANALYTICS_KMS_KEY_ID"] == {"Ref": "StorageKeyArn"}


def test_the_glue_columns_are_the_fields_of_a_fact() -> None:
    envelope = order_placed("order-1")
    fact = {
        "fact_id": envelope.event_id,
        **fact_of(DeliveredEvent(envelope, unpack_payload(envelope))),
    }
    columns = order_facts_table()["StorageDescriptor"]["Columns"]

    assert [column["Name"] for column in columns] == list(fact)


def test_the_local_stack_writes_the_same_layout_under_its_data_folder(tmp_path: Path) -> None:
    assert local_outputs(tmp_path)["ANALYTICS_SINK_URL"] == str(tmp_path / "analytics")
    assert AnalyticsSettings.model_fields["analytics_sink_url"].default == ".local/analytics"

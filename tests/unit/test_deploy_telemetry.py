"""The ADOT sidecar of every task against the processes it serves: the app's tracing settings
(marketplace_platform.settings.TracingSettings) read from the task's environment say OTLP to the
collector's own receiver, which exports to X-Ray; the collector scrapes the port the process
serves its metrics on, and writes the alarmed series to the namespace, dimension and log group
the alarms and the task role name."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import marketplace_platform.metrics  # noqa: F401  (registers every series)
from marketplace_platform.settings import ServiceSettings, TracingSettings
from tests.unit.test_deploy_network import import_closure
from tools import deployer
from tools.deployer.cfn import logical_id
from tools.deployer.collector import METRICS_NAMESPACE, PROCESS_ALARMS, serves_metrics

# OTEL_* names the app reads besides TracingSettings' own fields: the OTLP exporter's endpoint
# (OTLPSpanExporter reads it) and the SDK's service name (the same as SERVICE_NAME).
READ_BY_THE_SDK = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"}


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    paths = deployer.render_generated(tmp_path_factory.mktemp("cfn"))
    services: dict[str, Any] = json.loads(paths["services"].read_text())
    return services


def _containers(services: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    task = services["Resources"][f"{logical_id(name)}TaskDefinition"]
    return {c["Name"]: c for c in task["Properties"]["ContainerDefinitions"]}


def app_environment(services: dict[str, Any], name: str) -> dict[str, Any]:
    """The app container's environment, each Ref to a parameter replaced by its default."""
    env = {}
    for entry in _containers(services, name)["app"]["Environment"]:
        value = entry["Value"]
        if isinstance(value, dict) and "Ref" in value:
            value = services["Parameters"].get(value["Ref"], {}).get("Default", value)
        env[entry["Name"]] = value
    return env


def collector_config(services: dict[str, Any], name: str) -> dict[str, Any]:
    """The sidecar's configuration, as the collector reads it from AOT_CONFIG_CONTENT."""
    collector = _containers(services, name)["otel-collector"]
    assert collector["Command"] == ["--config=env:AOT_CONFIG_CONTENT"]
    (entry,) = collector["Environment"]
    assert entry["Name"] == "AOT_CONFIG_CONTENT"
    value = entry["Value"]
    text = (
        value if isinstance(value, str) else value["Fn::Sub"].replace("${EnvironmentName}", "prod")
    )
    assert "${" not in text, "the collector would expand it as an environment variable"
    config: dict[str, Any] = yaml.safe_load(text)
    return config


DEPLOYABLES = [d.name for d in deployer.present_deployables()]


@pytest.mark.parametrize("name", DEPLOYABLES)
def test_the_app_traces_over_otlp_to_the_sidecar_which_sends_to_x_ray(
    services: dict[str, Any], name: str
) -> None:
    env = app_environment(services, name)
    otel = {key for key in env if key.startswith("OTEL_")}
    assert otel - READ_BY_THE_SDK == {key.upper() for key in TracingSettings.model_fields} & otel
    assert otel >= {"OTEL_TRACES_EXPORTER", "OTEL_TRACES_SAMPLER_ARG"}
    tracing = TracingSettings(
        **{
            key.lower(): value
            for key, value in env.items()
            if key.lower() in TracingSettings.model_fields
        }
    )
    assert tracing.otel_traces_exporter == "otlp"
    assert tracing.service_name == env["OTEL_SERVICE_NAME"] == name
    ratio = services["Parameters"]["TraceSamplingRatio"]["Default"]
    assert tracing.otel_traces_sampler_arg == float(ratio)
    config = collector_config(services, name)
    receiver = config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://{receiver}"  # http: no TLS in the task
    traces = config["service"]["pipelines"]["traces"]
    assert (traces["receivers"], traces["exporters"]) == (["otlp"], ["awsxray"])


def test_the_sampling_ratio_parameter_admits_what_the_setting_admits(
    services: dict[str, Any],
) -> None:
    pattern = services["Parameters"]["TraceSamplingRatio"]["AllowedPattern"]
    for good in ("0", "0.05", "1", "1.0"):
        assert re.fullmatch(pattern, good), good
        TracingSettings(otel_traces_sampler_arg=float(good))
    for bad in ("1.5", "-0.1", "2", "abc"):
        assert not re.fullmatch(pattern, bad), bad


@pytest.mark.parametrize("alarm", PROCESS_ALARMS, ids=lambda a: a.name)
def test_the_sidecar_exports_the_alarmed_series_where_the_alarm_reads_it(
    services: dict[str, Any], alarm: Any
) -> None:
    assert alarm.metric in {m.name for m in REGISTRY.collect()}, "not a series the code serves"
    env = app_environment(services, alarm.deployable)
    config = collector_config(services, alarm.deployable)
    (scrape,) = config["receivers"]["prometheus"]["config"]["scrape_configs"]
    (static,) = scrape["static_configs"]
    assert static["targets"] == [f"{env['METRICS_HOST']}:{env['METRICS_PORT']}"]
    settings = ServiceSettings(metrics_host=env["METRICS_HOST"], metrics_port=env["METRICS_PORT"])
    assert settings.metrics_port == int(env["METRICS_PORT"]) > 0
    (keep,) = scrape["metric_relabel_configs"]
    assert keep["action"] == "keep"
    assert alarm.metric in keep["regex"].split("|")
    emf = config["exporters"]["awsemf"]
    declaration = next(
        d for d in emf["metric_declarations"] if alarm.metric in d["metric_name_selectors"]
    )
    cloudwatch = services["Resources"][alarm.name]["Properties"]
    assert emf["namespace"] == cloudwatch["Namespace"] == METRICS_NAMESPACE
    assert [{"Name": "Service", "Value": static["labels"]["Service"]}] == cloudwatch["Dimensions"]
    assert ["Service"] in declaration["dimensions"]
    metrics = config["service"]["pipelines"]["metrics"]
    assert (metrics["receivers"], metrics["exporters"]) == (["prometheus"], ["awsemf"])
    # The log group exists, encrypted, and the task role may write to it and nothing else new.
    group_id = f"{logical_id(alarm.deployable)}MetricLogs"
    group = services["Resources"][group_id]["Properties"]
    assert (
        group["LogGroupName"]["Fn::Sub"].replace("${EnvironmentName}", "prod")
        == emf["log_group_name"]
    )
    assert group["KmsKeyId"] == {"Ref": "LogsKeyArn"}
    role = services["Resources"][f"{logical_id(alarm.deployable)}TaskRole"]["Properties"]
    statements = role["Policies"][0]["PolicyDocument"]["Statement"]
    writes = [s for s in statements if "logs:PutLogEvents" in s["Action"]]
    assert [s["Resource"] for s in writes] == [{"Fn::GetAtt": [group_id, "Arn"]}]


@pytest.mark.parametrize(
    "deployable", [d for d in deployer.present_deployables() if serves_metrics(d)], ids=str
)
def test_each_process_told_a_metrics_port_serves_it(
    services: dict[str, Any], deployable: Any
) -> None:
    env = app_environment(services, deployable.name)
    assert env["METRICS_PORT"] != "0"
    files, _ = import_closure(deployable.module, f"{deployable.module}.__main__")
    assert any("serve_metrics(settings.metrics_port" in Path(f).read_text() for f in files)


def test_a_one_off_task_serves_no_metrics(services: dict[str, Any]) -> None:
    one_off = [d for d in deployer.present_deployables() if not d.long_running]
    assert one_off
    for deployable in one_off:
        assert "METRICS_PORT" not in app_environment(services, deployable.name)
        assert "prometheus" not in collector_config(services, deployable.name)["receivers"]


def test_the_root_stack_sets_the_sampling_ratio_the_services_stack_reads(
    services: dict[str, Any],
) -> None:
    root = deployer.load_template(deployer.TEMPLATES_DIR / "root.yaml")
    passed = root["Resources"]["Services"]["Properties"]["Parameters"]
    assert passed["TraceSamplingRatio"] == {"Ref": "TraceSamplingRatio"}
    declared = root["Parameters"]["TraceSamplingRatio"]
    expected = services["Parameters"]["TraceSamplingRatio"]
    assert declared["AllowedPattern"] == expected["AllowedPattern"]
    assert declared["Default"] == expected["Default"]

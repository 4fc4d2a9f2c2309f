"""The ADOT collector sidecar's configuration, and the alarms on the metrics it exports.

In every task the collector receives the process's spans over OTLP (TELEMETRY_ENDPOINT) and
sends them to X-Ray, and scrapes the process's own Prometheus metrics (METRICS_PORT,
marketplace_platform.metrics) and writes the ones PROCESS_ALARMS watch to CloudWatch as embedded
metric format (EMF) logs, in METRICS_NAMESPACE with the deployable's name as the `Service`
dimension. Only the alarmed series are kept: every other series would be a custom metric to pay
for that nothing reads. The same alert rules watch them locally (deploy/prometheus/rules.yml).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from .cfn import logical_id, ref, sub, unless_standby
from .deployables import Deployable
from .paths import TELEMETRY_ENDPOINT

METRICS_PORT = 9464  # every process's /metrics inside its task (METRICS_PORT, METRICS_HOST)
METRICS_HOST = "127.0.0.1"  # the sidecar shares the task's network namespace: nobody else scrapes
METRICS_NAMESPACE = "Checkout"
SCRAPE_SECONDS = 30  # two samples in each alarm period of 60 s


@dataclass(frozen=True)
class ProcessAlarm:
    """A CloudWatch alarm on one metric a deployable serves, the twin of one alert rule."""

    name: str  # logical id in services.json
    deployable: str
    metric: str  # a name of marketplace_platform.metrics
    comparison: str  # CloudWatch ComparisonOperator
    threshold: float
    minutes: int  # the rule's `for`: this many 60 s periods, each breaching
    labels: tuple[str, ...]  # the series' labels kept as a second dimension set (by schema...)
    description: str


PROCESS_ALARMS: tuple[ProcessAlarm, ...] = (
    ProcessAlarm(
        "OutboxLagAlarm",
        "outbox-relay",
        "checkout_outbox_oldest_unpublished_age_seconds",
        "GreaterThanThreshold",
        60,
        2,
        ("schema",),
        "the oldest unpublished outbox row (any schema) is over 60 s old for 2 minutes: the"
        " relay is down or slow, or the bus refuses events (`python -m workers.outbox_relay lag`)",
    ),
    ProcessAlarm(
        "PspBreakerOpenAlarm",
        "payment",
        "checkout_psp_breaker_open",
        "GreaterThanOrEqualToThreshold",
        1,
        1,
        (),
        "the PSP circuit breaker is open in a payment task: authorizations wait or fail",
    ),
)


def serves_metrics(deployable: Deployable) -> bool:
    """Whether the process serves /metrics (the long-running ones; not one-off tasks)."""
    return deployable.long_running


def _exported(deployable: Deployable) -> list[ProcessAlarm]:
    return [alarm for alarm in PROCESS_ALARMS if alarm.deployable == deployable.name]


def collector_config(deployable: Deployable) -> str | dict[str, Any]:
    """The collector's configuration as YAML text (an Fn::Sub if it names the environment)."""
    endpoint = TELEMETRY_ENDPOINT.removeprefix("http://")
    receivers: dict[str, Any] = {"otlp": {"protocols": {"grpc": {"endpoint": endpoint}}}}
    exporters: dict[str, Any] = {"awsxray": {}}
    pipelines: dict[str, Any] = {
        "traces": {"receivers": ["otlp"], "processors": ["batch/traces"], "exporters": ["awsxray"]}
    }
    processors: dict[str, Any] = {"batch/traces": {"timeout": "1s", "send_batch_size": 50}}
    exported = _exported(deployable)
    if exported and serves_metrics(deployable):
        receivers["prometheus"] = {
            "config": {
                "scrape_configs": [
                    {
                        "job_name": deployable.name,
                        "scrape_interval": f"{SCRAPE_SECONDS}s",
                        "static_configs": [
                            {
                                "targets": [f"{METRICS_HOST}:{METRICS_PORT}"],
                                "labels": {"Service": deployable.name},
                            }
                        ],
                        # Prometheus anchors the regex: exactly these series are kept.
                        "metric_relabel_configs": [
                            {
                                "source_labels": ["__name__"],
                                "regex": "|".join(alarm.metric for alarm in exported),
                                "action": "keep",
                            }
                        ],
                    }
                ]
            }
        }
        # The ECS detector gives the log stream its task id ({TaskId}); no dimension uses it.
        processors["resourcedetection"] = {"detectors": ["ecs"]}
        processors["batch/metrics"] = {"timeout": "60s"}
        exporters["awsemf"] = {
            "namespace": METRICS_NAMESPACE,
            "log_group_name": f"/checkout/${{EnvironmentName}}/{deployable.name}/metrics",
            "log_stream_name": "{TaskId}",
            "dimension_rollup_option": "NoDimensionRollup",
            "metric_declarations": [
                {
                    "dimensions": [["Service"], ["Service", *alarm.labels]]
                    if alarm.labels
                    else [["Service"]],
                    "metric_name_selectors": [alarm.metric],
                }
                for alarm in exported
            ],
        }
        pipelines["metrics"] = {
            "receivers": ["prometheus"],
            "processors": ["resourcedetection", "batch/metrics"],
            "exporters": ["awsemf"],
        }
    config = {
        "receivers": receivers,
        "processors": processors,
        "exporters": exporters,
        "service": {"pipelines": pipelines},
    }
    text = yaml.safe_dump(config, sort_keys=False)
    return sub(text) if "${" in text else text


def metric_log_group(deployable: Deployable) -> str | None:
    """The logical id of the EMF log group the collector writes to, if it exports metrics."""
    if _exported(deployable) and serves_metrics(deployable):
        return f"{logical_id(deployable.name)}MetricLogs"
    return None


def metric_resources(deployable: Deployable) -> dict[str, Any]:
    """The EMF log group and the alarms on the deployable's exported metrics."""
    group = metric_log_group(deployable)
    if group is None:
        return {}
    resources: dict[str, Any] = {
        group: {
            "Type": "AWS::Logs::LogGroup",
            "Properties": {
                "LogGroupName": sub(f"/checkout/${{EnvironmentName}}/{deployable.name}/metrics"),
                "RetentionInDays": 7,  # CloudWatch keeps the metrics; the EMF lines are a copy
                "KmsKeyId": ref("LogsKeyArn"),
            },
        }
    }
    for alarm in _exported(deployable):
        resources[alarm.name] = {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmDescription": f"{deployable.name}: {alarm.description}",
                "Namespace": METRICS_NAMESPACE,
                "MetricName": alarm.metric,
                "Dimensions": [{"Name": "Service", "Value": deployable.name}],
                "Statistic": "Maximum",  # over the tasks and, for the outbox, its schemas
                "Period": 60,
                "EvaluationPeriods": alarm.minutes,
                "DatapointsToAlarm": alarm.minutes,
                "Threshold": alarm.threshold,
                "ComparisonOperator": alarm.comparison,
                # No samples: the process is down, which its running-tasks alarm reports.
                "TreatMissingData": "notBreaching",
                "ActionsEnabled": unless_standby(True, False),  # a standby Region runs no tasks
                "AlarmActions": [ref("AlarmTopicArn")],
                "OKActions": [ref("AlarmTopicArn")],
            },
        }
    return resources

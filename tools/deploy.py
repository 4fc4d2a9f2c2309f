"""Package and deploy the checkout platform to AWS (CloudFormation on ECS Fargate).

`build` renders the generated templates (ECR repositories, ECS services, EventBridge rules and
SQS queues) from the repository's own tables and files, stages every template, the saga's
state machine definition (byte for byte) and the adapter Lambdas' zip under one content-hashed
build id, and writes the root stack's parameters. `deploy` uploads a build and deploys it with
the AWS CLI. `render` writes only the generated templates (for cfn-lint in `make lint`).

    python tools/deploy.py build --env prod --region eu-west-1
    python tools/deploy.py deploy --env prod --region eu-west-1 --image-tag <git sha>
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
ECS_DIR = REPO / "deploy" / "ecs"
TEMPLATES_DIR = ECS_DIR / "templates"
PARAMS_DIR = ECS_DIR / "params"
SAGA_DEFINITION = ECS_DIR / "checkout_saga.asl.json"
EVENT_RULES = ECS_DIR / "event_rules.json"
LAMBDA_REQUIREMENTS = ECS_DIR / "lambda" / "requirements.txt"
GENERATED_CONTRACTS = REPO / "gen" / "python"
# Our own packages the adapter Lambdas import; the contracts come from GENERATED_CONTRACTS.
LAMBDA_PACKAGES = ("workers/saga_adapters", "marketplace_platform")
LAMBDA_PLATFORM = ("manylinux2014_aarch64", "3.12")  # the functions' Architectures and Runtime
ADOT_IMAGE = "public.ecr.aws/aws-observability/aws-otel-collector:v0.43.1"
IMAGE_REPOSITORY_PREFIX = "checkout"
SERVICE_CONNECT_NAMESPACE = "checkout.sc"  # ECS Service Connect, service to service
TELEMETRY_ENDPOINT = "http://127.0.0.1:4317"  # the ADOT sidecar in the same task


# ---------------------------------------------------------------------------------------------
# What runs on AWS


@dataclass(frozen=True)
class Deployable:
    """One long-running process of the platform on ECS: its module, port and permissions."""

    name: str
    module: str
    port: int | None = None  # gRPC (or HTTP for the gateway); None: a worker without a port
    http: bool = False
    critical: bool = True  # False: Fargate Spot first (the queue keeps the work while it waits)
    cpu: int = 512
    memory: int = 1024
    min_tasks: int = 2
    max_tasks: int = 10
    calls: tuple[str, ...] = ()  # the gRPC services it calls: <NAME>_TARGET through Service Connect
    secrets: tuple[str, ...] = ("database", "redis")
    permissions: tuple[str, ...] = ()  # see _CAPABILITIES
    queue: str | None = None  # the SQS queue it consumes (a declared queue of event_rules.json)
    env: Mapping[str, str] = field(default_factory=dict)
    # False: a task definition only, for one-off tasks an operator runs (aws ecs run-task).
    long_running: bool = True


DEPLOYABLES: tuple[Deployable, ...] = (
    Deployable("cart", "services.cart", 50051),
    Deployable("inventory", "services.inventory", 50052),
    Deployable("payment", "services.payment", 50053, secrets=("database", "redis", "psp")),
    Deployable(
        "checkout",
        "services.checkout",
        50054,
        calls=("cart", "payment"),
        permissions=("start_saga",),
        env={"SAGA_BACKEND": "stepfunctions"},
    ),
    Deployable(
        "gateway",
        "gateway",
        8080,
        http=True,
        calls=("cart", "inventory", "checkout"),
        secrets=("redis", "jwt"),
        env={"GATEWAY_HOST": "0.0.0.0"},
    ),
    Deployable("outbox-relay", "workers.outbox_relay", permissions=("publish_events",)),
    Deployable(
        "shipping-consumer",
        "workers.consumers.shipping",
        queue="shipping",
        calls=("checkout", "payment"),
    ),
    Deployable(
        "email-consumer",
        "workers.consumers.email",
        queue="email",
        critical=False,
        permissions=("send_email",),
        min_tasks=1,
    ),
    Deployable(
        "invoice-consumer",
        "workers.consumers.invoice",
        queue="invoice",
        critical=False,
        permissions=("write_invoices",),
        min_tasks=1,
    ),
    Deployable(
        "analytics-consumer",
        "workers.consumers.analytics",
        queue="analytics",
        critical=False,
        permissions=("write_exports",),
        min_tasks=1,
    ),
    # The operators' queue tool (list, inspect DLQs, redrive), run as a one-off task.
    Deployable(
        "queue-admin",
        "workers.queue_admin",
        # It only calls SQS, but the shared settings refuse to start in production without
        # explicit DATABASE_URL and REDIS_URL.
        permissions=("administer_queues",),
        long_running=False,
        env={"QUEUE_BACKEND": "sqs"},
    ),
)

# Processes that run only on a developer's machine, and what replaces them on AWS.
LOCAL_ONLY: Mapping[str, str] = {
    "workers.saga_engine": "Step Functions runs the same state machine file on AWS",
    "psp_simulator": "a real payment provider, reached through PSP_URL, on AWS",
}

# Where runnable packages live: every `<dir>/**/__main__.py` below these is a deployable.
DEPLOYABLE_ROOTS = ("services", "gateway", "workers", "psp_simulator")


def runnable_modules(repo: Path = REPO) -> set[str]:
    """Every module of the repository a process runs with `python -m` (has a __main__.py)."""
    modules = set()
    for root in DEPLOYABLE_ROOTS:
        for main in (repo / root).rglob("__main__.py"):
            package = main.parent.relative_to(repo)
            if not any(part.startswith((".", "_")) for part in package.parts):
                modules.add(".".join(package.parts))
    return modules


def module_exists(module: str, repo: Path = REPO) -> bool:
    """Whether `python -m module` would find the module in this repository."""
    path = repo.joinpath(*module.split("."))
    return (path / "__main__.py").is_file() or path.with_suffix(".py").is_file()


def present_deployables(repo: Path = REPO) -> tuple[Deployable, ...]:
    """The deployables whose module is in the repository (a declared but unwritten one waits)."""
    return tuple(d for d in DEPLOYABLES if module_exists(d.module, repo))


# ---------------------------------------------------------------------------------------------
# Reading templates (CloudFormation YAML with its short-form tags)


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that turns `!Ref x` into {"Ref": x} and `!Sub s` into {"Fn::Sub": s}."""


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path) -> dict[str, Any]:
    """A template (YAML with short tags, or JSON) as plain data with long-form intrinsics."""
    loaded: dict[str, Any] = yaml.load(path.read_text(), Loader=_CfnLoader)
    return loaded


# ---------------------------------------------------------------------------------------------
# Generated templates


def _sub(text: str) -> dict[str, str]:
    return {"Fn::Sub": text}


def _ref(name: str) -> dict[str, str]:
    return {"Ref": name}


def _logical(name: str) -> str:
    """A logical id from a hyphenated name: "shipping-dlq" -> "ShippingDlq"."""
    return "".join(part[:1].upper() + part[1:] for part in name.replace("_", "-").split("-"))


def _template(description: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"{description} GENERATED by tools/deploy.py: do not edit.",
        "Parameters": dict(parameters),
        "Resources": {},
        "Outputs": {},
    }


def read_event_rules(path: Path = EVENT_RULES) -> dict[str, Any]:
    """The routing rules and queue declarations the local bus reads."""
    rules: dict[str, Any] = json.loads(path.read_text())
    return rules


def queue_arn(name: str) -> dict[str, str]:
    """The ARN of a declared queue (queues keep their declared names: one account per env)."""
    return _sub(f"arn:${{AWS::Partition}}:sqs:${{AWS::Region}}:${{AWS::AccountId}}:{name}")


def render_events(rules: Mapping[str, Any]) -> dict[str, Any]:
    """The EventBridge bus, one rule per routing rule, and each declared queue with its DLQ."""
    template = _template(
        "EventBridge bus and rules, SQS queues with DLQs and alarms, from event_rules.json.",
        {
            "EnvironmentName": {"Type": "String"},
            "AlarmTopicArn": {"Type": "String"},
            "OldestMessageAlarmSeconds": {"Type": "Number", "Default": 300},
        },
    )
    resources = template["Resources"]
    resources["QueueKey"] = {
        "Type": "AWS::KMS::Key",
        "Properties": {
            "Description": _sub("${EnvironmentName} SQS queues and DLQs"),
            "EnableKeyRotation": True,
            "KeyPolicy": _queue_key_policy(),
        },
    }
    bus_name = rules["event_bus_name"]
    resources["EventBus"] = {"Type": "AWS::Events::EventBus", "Properties": {"Name": bus_name}}
    queue_targets: dict[str, list[str]] = {}
    for rule in rules["rules"]:
        for target in rule["targets"]:
            queue_targets.setdefault(target, []).append(rule["name"])
    for queue in rules["queues"]:
        resources.update(_queue_resources(queue, queue_targets.get(queue["name"], [])))
    for rule in rules["rules"]:
        resources[f"Rule{_logical(rule['name'])}"] = {
            "Type": "AWS::Events::Rule",
            "Properties": {
                "Name": rule["name"],
                "EventBusName": _ref("EventBus"),
                "EventPattern": rule["event_pattern"],
                "State": "ENABLED",
                "Targets": [
                    {
                        "Id": target,
                        "Arn": {"Fn::GetAtt": [f"Queue{_logical(target)}", "Arn"]},
                        "RetryPolicy": {
                            "MaximumEventAgeInSeconds": 86_400,
                            "MaximumRetryAttempts": 185,
                        },
                    }
                    for target in rule["targets"]
                ],
            },
        }
    template["Outputs"] = {
        "EventBusName": {"Value": _ref("EventBus")},
        "EventBusArn": {"Value": {"Fn::GetAtt": ["EventBus", "Arn"]}},
        "QueueKeyArn": {"Value": {"Fn::GetAtt": ["QueueKey", "Arn"]}},
    }
    return template


def _queue_key_policy() -> dict[str, Any]:
    # EventBridge must encrypt what it sends to a queue under this key; nobody else may use it
    # beyond the account's own IAM policies.
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AccountAdministersTheKey",
                "Effect": "Allow",
                "Principal": {"AWS": _sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root")},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "EventBridgeSendsToQueues",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:SourceAccount": _ref("AWS::AccountId")}},
            },
        ],
    }


def _queue_resources(queue: Mapping[str, Any], rule_names: Sequence[str]) -> dict[str, Any]:
    name, dlq = queue["name"], queue["dead_letter_queue"]
    queue_id, dlq_id = f"Queue{_logical(name)}", f"Queue{_logical(dlq)}"
    encryption = {"KmsMasterKeyId": _ref("QueueKey"), "KmsDataKeyReusePeriodSeconds": 300}
    resources: dict[str, Any] = {
        dlq_id: {
            "Type": "AWS::SQS::Queue",
            "UpdateReplacePolicy": "Retain",
            "DeletionPolicy": "Retain",
            "Properties": {
                "QueueName": dlq,
                "MessageRetentionPeriod": 1_209_600,  # 14 days for an operator to redrive
                "RedriveAllowPolicy": {
                    "redrivePermission": "byQueue",
                    "sourceQueueArns": [queue_arn(name)],
                },
                **encryption,
            },
        },
        queue_id: {
            "Type": "AWS::SQS::Queue",
            "UpdateReplacePolicy": "Retain",
            "DeletionPolicy": "Retain",
            "Properties": {
                "QueueName": name,
                "VisibilityTimeout": queue["visibility_timeout_seconds"],
                "MessageRetentionPeriod": 345_600,
                "ReceiveMessageWaitTimeSeconds": 20,
                "RedrivePolicy": {
                    "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
                    "maxReceiveCount": queue["max_receive_count"],
                },
                **encryption,
            },
        },
        f"{dlq_id}DepthAlarm": _queue_alarm(
            dlq_id,
            "ApproximateNumberOfMessagesVisible",
            0,
            f"{dlq}: a message was dead-lettered; inspect and redrive with the queue admin CLI",
        ),
        f"{queue_id}OldestMessageAlarm": _queue_alarm(
            queue_id,
            "ApproximateAgeOfOldestMessage",
            "OldestMessageAlarmSeconds",
            f"{name}: the oldest message waits too long; its consumer is behind or down",
        ),
    }
    if rule_names:
        resources[f"{queue_id}Policy"] = {
            "Type": "AWS::SQS::QueuePolicy",
            "Properties": {
                "Queues": [_ref(queue_id)],
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "RulesSendEvents",
                            "Effect": "Allow",
                            "Principal": {"Service": "events.amazonaws.com"},
                            "Action": "sqs:SendMessage",
                            "Resource": {"Fn::GetAtt": [queue_id, "Arn"]},
                            "Condition": {
                                "ArnEquals": {
                                    "aws:SourceArn": [
                                        {"Fn::GetAtt": [f"Rule{_logical(rule)}", "Arn"]}
                                        for rule in rule_names
                                    ]
                                }
                            },
                        },
                        {
                            "Sid": "TlsOnly",
                            "Effect": "Deny",
                            "Principal": "*",
                            "Action": "sqs:*",
                            "Resource": {"Fn::GetAtt": [queue_id, "Arn"]},
                            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                        },
                    ],
                },
            },
        }
    return resources


def _queue_alarm(queue_id: str, metric: str, threshold: int | str, text: str) -> dict[str, Any]:
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmDescription": text,
            "Namespace": "AWS/SQS",
            "MetricName": metric,
            "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id, "QueueName"]}}],
            "Statistic": "Maximum",
            "Period": 60,
            "EvaluationPeriods": 1,
            "Threshold": _ref(threshold) if isinstance(threshold, str) else threshold,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": [_ref("AlarmTopicArn")],
            "OKActions": [_ref("AlarmTopicArn")],
        },
    }


# The task role's capabilities by name: each is one least-privilege policy statement list.
def _capability(name: str, queues: Sequence[str]) -> list[dict[str, Any]]:
    arn = "arn:${AWS::Partition}"
    statements: dict[str, list[dict[str, Any]]] = {
        "start_saga": [
            {
                "Effect": "Allow",
                "Action": ["states:StartExecution"],
                "Resource": _sub(
                    f"{arn}:states:${{AWS::Region}}:${{AWS::AccountId}}:stateMachine:checkout"
                ),
            },
            {
                "Effect": "Allow",
                "Action": ["states:DescribeExecution"],
                "Resource": _sub(
                    f"{arn}:states:${{AWS::Region}}:${{AWS::AccountId}}:execution:checkout:*"
                ),
            },
        ],
        "publish_events": [
            {
                "Effect": "Allow",
                "Action": ["events:PutEvents"],
                "Resource": _sub(
                    f"{arn}:events:${{AWS::Region}}:${{AWS::AccountId}}:event-bus/${{EventBusName}}"
                ),
            }
        ],
        "send_email": [
            {
                "Effect": "Allow",
                "Action": ["ses:SendEmail", "ses:SendRawEmail"],
                "Resource": _sub(
                    f"{arn}:ses:${{AWS::Region}}:${{AWS::AccountId}}:identity/${{EmailIdentity}}"
                ),
            }
        ],
        "administer_queues": [
            {
                "Effect": "Allow",
                "Action": [
                    "sqs:GetQueueUrl",
                    "sqs:GetQueueAttributes",
                    "sqs:ReceiveMessage",
                    "sqs:SendMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                ],
                "Resource": [queue_arn(queue) for queue in queues],
            },
            {
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": _ref("QueueKeyArn"),
            },
        ],
        "write_invoices": _bucket_writer("InvoiceBucketName"),
        "write_exports": _bucket_writer("ExportBucketName"),
    }
    return statements[name]


def _bucket_writer(bucket_parameter: str) -> list[dict[str, Any]]:
    return [
        {
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:GetObject", "s3:GetObjectVersion"],
            "Resource": _sub(f"arn:${{AWS::Partition}}:s3:::${{{bucket_parameter}}}/*"),
        },
        {
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": _sub(f"arn:${{AWS::Partition}}:s3:::${{{bucket_parameter}}}"),
        },
        {
            "Effect": "Allow",
            "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
            "Resource": _ref("StorageKeyArn"),
        },
    ]


def _consumer_statements(queue: str) -> list[dict[str, Any]]:
    return [
        {
            "Effect": "Allow",
            "Action": [
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:ChangeMessageVisibility",
                "sqs:GetQueueUrl",
                "sqs:GetQueueAttributes",
            ],
            "Resource": queue_arn(queue),
        },
        {"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": _ref("QueueKeyArn")},
    ]


def _telemetry_statements(deployable: Deployable) -> list[dict[str, Any]]:
    # X-Ray has no resource-level permissions: these write-only actions take "*".
    return [
        {
            "Effect": "Allow",
            "Action": [
                "xray:PutTraceSegments",
                "xray:PutTelemetryRecords",
                "xray:GetSamplingRules",
                "xray:GetSamplingTargets",
            ],
            "Resource": "*",
        },
        {
            "Effect": "Allow",
            "Action": ["cloudwatch:PutMetricData"],
            "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": "ECS/AWSOTel/Application"}},
        },
        {
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            "Resource": _sub(
                "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:"
                f"/checkout/${{EnvironmentName}}/{deployable.name}:*"
            ),
        },
    ]


# Secrets each process may read, as (env var, secret parameter, JSON key or "").
_SECRETS: Mapping[str, tuple[tuple[str, str, str], ...]] = {
    "database": (
        ("DB_USERNAME", "DatabaseSecretArn", "username"),
        ("DB_PASSWORD", "DatabaseSecretArn", "password"),
    ),
    "redis": (("REDIS_AUTH_TOKEN", "RedisSecretArn", "token"),),
    "jwt": (("GATEWAY_JWT_SECRET", "JwtSecretArn", ""),),
    "psp": (("PSP_API_KEY", "PspSecretArn", ""),),
}

SERVICES_PARAMETERS: Mapping[str, Any] = {
    "EnvironmentName": {"Type": "String"},
    "ClusterName": {"Type": "String"},
    "ServiceConnectNamespaceArn": {"Type": "String"},
    "DiscoveryNamespaceId": {"Type": "String"},
    "ServicesSecurityGroupId": {"Type": "AWS::EC2::SecurityGroup::Id"},
    "AppSubnetIds": {"Type": "List<AWS::EC2::Subnet::Id>"},
    "ImageRegistry": {"Type": "String", "Description": "<account>.dkr.ecr.<region>.amazonaws.com"},
    "ImageTag": {"Type": "String"},
    "DatabaseHost": {"Type": "String"},
    "DatabasePort": {"Type": "String", "Default": "5432"},
    "DatabaseName": {"Type": "String", "Default": "marketplace"},
    "DatabaseSecretArn": {"Type": "String"},
    "RedisHost": {"Type": "String"},
    "RedisSecretArn": {"Type": "String"},
    "JwtSecretArn": {"Type": "String"},
    "PspSecretArn": {"Type": "String"},
    "PspUrl": {"Type": "String"},
    "SecretsKeyArn": {"Type": "String"},
    "QueueKeyArn": {"Type": "String"},
    "StorageKeyArn": {"Type": "String"},
    "EventBusName": {"Type": "String"},
    "InvoiceBucketName": {"Type": "String"},
    "ExportBucketName": {"Type": "String"},
    "EmailIdentity": {"Type": "String"},
    "AlarmTopicArn": {"Type": "String"},
    "LogRetentionDays": {"Type": "Number", "Default": 30},
    # A warm standby Region (the Global Database secondary) runs no tasks until failover.
    "Standby": {"Type": "String", "AllowedValues": ["true", "false"], "Default": "false"},
}


def _unless_standby(active: Any, standby: Any) -> dict[str, Any]:
    return {"Fn::If": ["IsStandby", standby, active]}


def render_services(deployables: Iterable[Deployable], rules: Mapping[str, Any]) -> dict[str, Any]:
    """One Fargate service per deployable: task definition, roles, logs, scaling and alarms."""
    queues = [name for q in rules["queues"] for name in (q["name"], q["dead_letter_queue"])]
    template = _template(
        "ECS on Fargate: one service per gRPC service, the gateway and each worker.",
        SERVICES_PARAMETERS,
    )
    template["Conditions"] = {"IsStandby": {"Fn::Equals": [_ref("Standby"), "true"]}}
    # The workers' parameters stay declared while a declared worker is not yet in the repo.
    template["Metadata"] = {"cfn-lint": {"config": {"ignore_checks": ["W2001"]}}}
    for deployable in deployables:
        template["Resources"].update(_service_resources(deployable, queues))
        if deployable.port is not None:
            prefix = _logical(deployable.name)
            template["Outputs"][f"{prefix}DiscoveryServiceArn"] = {
                "Value": {"Fn::GetAtt": [f"{prefix}Discovery", "Arn"]}
            }
    return template


def _service_resources(deployable: Deployable, queues: Sequence[str]) -> dict[str, Any]:
    prefix = _logical(deployable.name)
    secret_arns = sorted({param for kind in deployable.secrets for _, param, _ in _SECRETS[kind]})
    task_statements = _telemetry_statements(deployable)
    for capability in deployable.permissions:
        task_statements += _capability(capability, queues)
    if deployable.queue is not None:
        task_statements += _consumer_statements(deployable.queue)
    resources: dict[str, Any] = {
        f"{prefix}Logs": {
            "Type": "AWS::Logs::LogGroup",
            "Properties": {
                "LogGroupName": _sub(f"/checkout/${{EnvironmentName}}/{deployable.name}"),
                "RetentionInDays": _ref("LogRetentionDays"),
            },
        },
        f"{prefix}ExecutionRole": _role(
            "ecs-tasks.amazonaws.com",
            "pull-image-read-secrets",
            [
                {
                    "Effect": "Allow",
                    "Action": ["ecr:GetAuthorizationToken"],
                    "Resource": "*",  # the action has no resource-level permissions
                },
                {
                    "Effect": "Allow",
                    "Action": [
                        "ecr:BatchGetImage",
                        "ecr:GetDownloadUrlForLayer",
                        "ecr:BatchCheckLayerAvailability",
                    ],
                    "Resource": _sub(
                        "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/"
                        f"{IMAGE_REPOSITORY_PREFIX}/{deployable.name}"
                    ),
                },
                {
                    "Effect": "Allow",
                    "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                    "Resource": {"Fn::GetAtt": [f"{prefix}Logs", "Arn"]},
                },
                {
                    "Effect": "Allow",
                    "Action": ["secretsmanager:GetSecretValue"],
                    "Resource": [_ref(param) for param in secret_arns],
                },
                {"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": _ref("SecretsKeyArn")},
            ],
        ),
        f"{prefix}TaskRole": _role("ecs-tasks.amazonaws.com", "least-privilege", task_statements),
        f"{prefix}TaskDefinition": _task_definition(deployable),
        f"{prefix}Service": _service(deployable),
        f"{prefix}ScalableTarget": {
            "Type": "AWS::ApplicationAutoScaling::ScalableTarget",
            "Properties": {
                "ServiceNamespace": "ecs",
                "ScalableDimension": "ecs:service:DesiredCount",
                "ResourceId": _sub(f"service/${{ClusterName}}/${{{prefix}Service.Name}}"),
                "MinCapacity": _unless_standby(deployable.min_tasks, 0),
                "MaxCapacity": deployable.max_tasks,
            },
        },
        f"{prefix}CpuScaling": {
            "Type": "AWS::ApplicationAutoScaling::ScalingPolicy",
            "Properties": {
                "PolicyName": _sub(f"${{EnvironmentName}}-{deployable.name}-cpu"),
                "PolicyType": "TargetTrackingScaling",
                "ScalingTargetId": _ref(f"{prefix}ScalableTarget"),
                "TargetTrackingScalingPolicyConfiguration": {
                    "TargetValue": 60,
                    "ScaleInCooldown": 120,
                    "ScaleOutCooldown": 30,
                    "PredefinedMetricSpecification": {
                        "PredefinedMetricType": "ECSServiceAverageCPUUtilization"
                    },
                },
            },
        },
        f"{prefix}RunningTasksAlarm": {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmDescription": f"{deployable.name}: fewer tasks running than its minimum",
                "Namespace": "ECS/ContainerInsights",
                "MetricName": "RunningTaskCount",
                "Dimensions": [
                    {"Name": "ClusterName", "Value": _ref("ClusterName")},
                    {"Name": "ServiceName", "Value": {"Fn::GetAtt": [f"{prefix}Service", "Name"]}},
                ],
                "Statistic": "Minimum",
                "Period": 60,
                "EvaluationPeriods": 5,
                "Threshold": deployable.min_tasks,
                "ComparisonOperator": "LessThanThreshold",
                "TreatMissingData": "breaching",
                "ActionsEnabled": _unless_standby(True, False),
                "AlarmActions": [_ref("AlarmTopicArn")],
                "OKActions": [_ref("AlarmTopicArn")],
            },
        },
    }
    if not deployable.long_running:
        for part in ("Service", "ScalableTarget", "CpuScaling", "RunningTasksAlarm"):
            del resources[f"{prefix}{part}"]
        return resources
    if deployable.port is not None:
        # The adapter Lambdas and API Gateway are outside Service Connect: they find the
        # service in Cloud Map private DNS (SRV carries the port API Gateway needs).
        record = {"Type": "SRV", "TTL": 10} if deployable.http else {"Type": "A", "TTL": 10}
        resources[f"{prefix}Discovery"] = {
            "Type": "AWS::ServiceDiscovery::Service",
            "Properties": {
                "Name": deployable.name,
                "NamespaceId": _ref("DiscoveryNamespaceId"),
                "DnsConfig": {"DnsRecords": [record], "RoutingPolicy": "MULTIVALUE"},
                "HealthCheckCustomConfig": {"FailureThreshold": 1},
            },
        }
    return resources


def _role(service: str, policy_name: str, statements: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": service},
                        "Action": "sts:AssumeRole",
                        "Condition": {
                            "StringEquals": {"aws:SourceAccount": _ref("AWS::AccountId")}
                        },
                    }
                ],
            },
            "Policies": [
                {
                    "PolicyName": policy_name,
                    "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
                }
            ],
        },
    }


def health_command(deployable: Deployable) -> list[str]:
    """The container health check: the same script the image's HEALTHCHECK runs."""
    if deployable.port is None:
        probe = ["worker"]
    elif deployable.http:
        probe = ["http", str(deployable.port)]
    else:
        probe = ["grpc", str(deployable.port)]
    return ["CMD", "python", "/app/deploy/docker/healthcheck.py", *probe]


def _environment(deployable: Deployable) -> list[dict[str, Any]]:
    env: dict[str, Any] = {
        "APP_ENV": "production",
        "SERVICE_NAME": deployable.name,
        "LOG_LEVEL": "INFO",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": TELEMETRY_ENDPOINT,
        "OTEL_SERVICE_NAME": deployable.name,
        "AWS_REGION": _ref("AWS::Region"),
    }
    if "database" in deployable.secrets:
        env |= {
            "DB_HOST": _ref("DatabaseHost"),
            "DB_PORT": _ref("DatabasePort"),
            "DB_NAME": _ref("DatabaseName"),
        }
    if "redis" in deployable.secrets:
        env["REDIS_HOST"] = _ref("RedisHost")
    if "psp" in deployable.secrets:
        env["PSP_URL"] = _ref("PspUrl")
    if deployable.http:
        env["GATEWAY_PORT"] = str(deployable.port)
    elif deployable.port is not None:
        env |= {"GRPC_HOST": "0.0.0.0", "GRPC_PORT": str(deployable.port)}
    by_name = {d.name: d for d in DEPLOYABLES}
    for callee in deployable.calls:
        env[f"{callee.upper()}_TARGET"] = f"{callee}:{by_name[callee].port}"
    if "publish_events" in deployable.permissions:
        # workers.outbox_relay's settings; the rules file ships in the image at its default path.
        env |= {"RELAY_BUS": "eventbridge", "RELAY_EVENT_BUS_NAME": _ref("EventBusName")}
    # workers.consumers' settings (ConsumerSettings and each consumer's own).
    if deployable.queue is not None:
        env |= {"QUEUE_BACKEND": "sqs", "CONSUMER_QUEUE": deployable.queue}
    if "write_invoices" in deployable.permissions:
        env |= {
            "INVOICE_STORE_URL": _sub("s3://${InvoiceBucketName}/invoices"),
            "INVOICE_KMS_KEY_ID": _ref("StorageKeyArn"),
        }
    if "write_exports" in deployable.permissions:
        env["ANALYTICS_SINK_URL"] = _sub("s3://${ExportBucketName}/order-facts")
    if "send_email" in deployable.permissions:
        env |= {"MAILER_URL": "ses://", "EMAIL_SENDER": _ref("EmailIdentity")}
    if "start_saga" in deployable.permissions:
        env["SAGA_STATE_MACHINE_ARN"] = _sub(
            "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:stateMachine:checkout"
        )
    env |= deployable.env
    return [{"Name": name, "Value": value} for name, value in sorted(env.items())]


def _secrets(deployable: Deployable) -> list[dict[str, Any]]:
    secrets = []
    for kind in deployable.secrets:
        for env_name, param, key in _SECRETS[kind]:
            value_from = _sub(f"${{{param}}}:{key}::") if key else _ref(param)
            secrets.append({"Name": env_name, "ValueFrom": value_from})
    return secrets


def _task_definition(deployable: Deployable) -> dict[str, Any]:
    prefix = _logical(deployable.name)
    logging = {
        "LogDriver": "awslogs",
        "Options": {
            "awslogs-group": _ref(f"{prefix}Logs"),
            "awslogs-region": _ref("AWS::Region"),
            "awslogs-stream-prefix": deployable.name,
        },
    }
    app: dict[str, Any] = {
        "Name": "app",
        "Image": _sub(
            f"${{ImageRegistry}}/{IMAGE_REPOSITORY_PREFIX}/{deployable.name}:${{ImageTag}}"
        ),
        "Essential": True,
        "Command": ["python", "-m", deployable.module],
        "Environment": _environment(deployable),
        "Secrets": _secrets(deployable),
        "HealthCheck": {
            "Command": health_command(deployable),
            "Interval": 15,
            "Timeout": 5,
            "Retries": 3,
            "StartPeriod": 30,
        },
        "StopTimeout": 30,
        "User": "10001:10001",
        "ReadonlyRootFilesystem": True,
        "MountPoints": [{"SourceVolume": "tmp", "ContainerPath": "/tmp"}],
        "LogConfiguration": logging,
        "DependsOn": [{"ContainerName": "otel-collector", "Condition": "START"}],
    }
    if deployable.port is not None:
        app["PortMappings"] = [
            {
                "Name": "http" if deployable.http else "grpc",
                "ContainerPort": deployable.port,
                "Protocol": "tcp",
                "AppProtocol": "http" if deployable.http else "grpc",
            }
        ]
    collector = {
        "Name": "otel-collector",
        "Image": ADOT_IMAGE,
        "Essential": False,  # losing traces must not stop checkout
        "Command": ["--config=/etc/ecs/ecs-default-config.yaml"],
        "LogConfiguration": logging,
    }
    return {
        "Type": "AWS::ECS::TaskDefinition",
        "Properties": {
            "Family": _sub(f"${{EnvironmentName}}-{deployable.name}"),
            "RequiresCompatibilities": ["FARGATE"],
            "NetworkMode": "awsvpc",
            "Cpu": str(deployable.cpu),
            "Memory": str(deployable.memory),
            "RuntimePlatform": {"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"},
            "ExecutionRoleArn": {"Fn::GetAtt": [f"{prefix}ExecutionRole", "Arn"]},
            "TaskRoleArn": {"Fn::GetAtt": [f"{prefix}TaskRole", "Arn"]},
            "Volumes": [{"Name": "tmp"}],
            "ContainerDefinitions": [app, collector],
        },
    }


def _service(deployable: Deployable) -> dict[str, Any]:
    prefix = _logical(deployable.name)
    if deployable.critical:
        strategy = [{"CapacityProvider": "FARGATE", "Weight": 1}]
    else:
        # Interruptions only delay work: the queue keeps each message until it is deleted.
        strategy = [
            {"CapacityProvider": "FARGATE_SPOT", "Weight": 4},
            {"CapacityProvider": "FARGATE", "Weight": 1},
        ]
    service_connect: dict[str, Any] = {
        "Enabled": True,
        "Namespace": _ref("ServiceConnectNamespaceArn"),
    }
    properties: dict[str, Any] = {
        "ServiceName": deployable.name,
        "Cluster": _ref("ClusterName"),
        "TaskDefinition": _ref(f"{prefix}TaskDefinition"),
        "DesiredCount": _unless_standby(deployable.min_tasks, 0),
        "CapacityProviderStrategy": strategy,
        "PropagateTags": "SERVICE",
        "EnableECSManagedTags": True,
        "DeploymentConfiguration": {
            "MinimumHealthyPercent": 100,
            "MaximumPercent": 200,
            "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True},
        },
        "NetworkConfiguration": {
            "AwsvpcConfiguration": {
                "AssignPublicIp": "DISABLED",
                "Subnets": _ref("AppSubnetIds"),
                "SecurityGroups": [_ref("ServicesSecurityGroupId")],
            }
        },
        "ServiceConnectConfiguration": service_connect,
    }
    if deployable.port is not None:
        if not deployable.http:  # the gateway is called by the VPC link only, not in the mesh
            service_connect["Services"] = [
                {
                    "PortName": "grpc",
                    "DiscoveryName": deployable.name,
                    "ClientAliases": [{"Port": deployable.port, "DnsName": deployable.name}],
                }
            ]
        registry: dict[str, Any] = {"RegistryArn": {"Fn::GetAtt": [f"{prefix}Discovery", "Arn"]}}
        if deployable.http:
            registry |= {"ContainerName": "app", "ContainerPort": deployable.port}
        properties["ServiceRegistries"] = [registry]
    return {"Type": "AWS::ECS::Service", "Properties": properties}


def render_registry(deployables: Iterable[Deployable]) -> dict[str, Any]:
    """The per-Region bootstrap: the artifact bucket and one ECR repository per deployable."""
    template = _template(
        "Artifact bucket and ECR repositories, deployed before the platform stack.", {}
    )
    resources = template["Resources"]
    resources["ArtifactBucket"] = {
        "Type": "AWS::S3::Bucket",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "VersioningConfiguration": {"Status": "Enabled"},
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                ]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
            "LifecycleConfiguration": {
                "Rules": [
                    {
                        "Id": "old-builds",
                        "Status": "Enabled",
                        "NoncurrentVersionExpiration": {"NoncurrentDays": 90},
                    }
                ]
            },
        },
    }
    for deployable in deployables:
        resources[f"{_logical(deployable.name)}Repository"] = {
            "Type": "AWS::ECR::Repository",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "RepositoryName": f"{IMAGE_REPOSITORY_PREFIX}/{deployable.name}",
                "ImageTagMutability": "IMMUTABLE",
                "ImageScanningConfiguration": {"ScanOnPush": True},
                "EncryptionConfiguration": {"EncryptionType": "KMS"},
            },
        }
    template["Outputs"] = {"ArtifactBucketName": {"Value": _ref("ArtifactBucket")}}
    del template["Parameters"]
    return template


def render_generated(out: Path, repo: Path = REPO) -> dict[str, Path]:
    """Write the generated templates into `out`; their paths by template name."""
    out.mkdir(parents=True, exist_ok=True)
    deployables = present_deployables(repo)
    rules = read_event_rules(repo / EVENT_RULES.relative_to(REPO))
    rendered = {
        "registry": render_registry(deployables),
        "services": render_services(deployables, rules),
        "events": render_events(rules),
    }
    paths = {}
    for name, template in rendered.items():
        path = out / f"{name}.json"
        path.write_text(json.dumps(template, indent=2, sort_keys=False) + "\n")
        paths[name] = path
    return paths


# ---------------------------------------------------------------------------------------------
# Packaging


def build_lambda_zip(out: Path, *, repo: Path = REPO, dependencies: bool = True) -> Path:
    """The adapter Lambdas' zip: their handlers, the platform library and the contracts."""
    staging = Path(tempfile.mkdtemp(prefix="saga-adapters-"))
    try:
        for package in LAMBDA_PACKAGES:
            _copy_sources(repo / package, staging / package)
        shutil.copy2(repo / "workers" / "__init__.py", staging / "workers" / "__init__.py")
        contracts = repo / GENERATED_CONTRACTS.relative_to(REPO)
        for top in sorted(contracts.iterdir()):
            if top.is_dir() and not top.name.startswith("."):
                _copy_sources(top, staging / top.name)
        if dependencies:
            platform, python = LAMBDA_PLATFORM
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(staging),
                 "--platform", platform, "--python-version", python, "--implementation", "cp",
                 "--only-binary=:all:", "-r", str(repo / LAMBDA_REQUIREMENTS.relative_to(REPO))],
                check=True,
            )  # fmt: skip
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(staging.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    # A fixed timestamp: the same sources give the same bytes and the same key.
                    info = zipfile.ZipInfo(str(path.relative_to(staging)), (1980, 1, 1, 0, 0, 0))
                    info.external_attr = 0o644 << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    archive.writestr(info, path.read_bytes())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _copy_sources(source: Path, target: Path) -> None:
    for path in source.rglob("*.py"):
        if "__pycache__" in path.parts or "migrations" in path.relative_to(source).parts:
            continue
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)


@dataclass(frozen=True)
class Build:
    """A staged build: its id, its directory, and what the root stack's parameters name."""

    build_id: str
    directory: Path
    keys: Mapping[str, str]  # artifact name -> S3 key (under the build id)


def stage(out: Path, *, repo: Path = REPO, lambda_dependencies: bool = True) -> Build:
    """Stage templates, the saga definition (unchanged) and the Lambda zip under a build id."""
    scratch = out / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    generated = render_generated(scratch / "templates", repo)
    files: dict[str, Path] = {
        f"templates/{path.name}": path
        for path in sorted((repo / TEMPLATES_DIR.relative_to(REPO)).glob("*.yaml"))
    }
    files |= {f"templates/{path.name}": path for path in generated.values()}
    files["checkout_saga.asl.json"] = repo / SAGA_DEFINITION.relative_to(REPO)
    files["saga-adapters.zip"] = build_lambda_zip(
        scratch / "saga-adapters.zip", repo=repo, dependencies=lambda_dependencies
    )
    digest = hashlib.sha256()
    for name, path in sorted(files.items()):
        digest.update(name.encode() + b"\0" + path.read_bytes())
    build_id = digest.hexdigest()[:16]
    directory = out / build_id
    shutil.rmtree(directory, ignore_errors=True)
    for name, path in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, directory / name)
    shutil.rmtree(scratch, ignore_errors=True)
    keys = {name: f"{build_id}/{name}" for name in files}
    return Build(build_id, directory, keys)


def root_parameters(build: Build, *, env: str, region: str) -> dict[str, str]:
    """The root stack's parameters: the env/Region file plus where this build's artifacts are."""
    parameters: dict[str, str] = json.loads((PARAMS_DIR / env / f"{region}.json").read_text())
    return parameters | {
        "TemplatePrefix": build.build_id + "/templates",
        "SagaDefinitionKey": build.keys["checkout_saga.asl.json"],
        "AdapterCodeKey": build.keys["saga-adapters.zip"],
    }


def _aws(*args: str) -> str:
    result = subprocess.run(["aws", *args], check=True, capture_output=True, text=True)
    return result.stdout.strip()


def push_images(*, region: str, image_tag: str, registry: str) -> None:
    """Build every present deployable's image and push it to its ECR repository."""
    login = _aws("ecr", "get-login-password", "--region", region)
    subprocess.run(["docker", "login", "--username", "AWS", "--password-stdin", registry],
                   input=login, text=True, check=True)  # fmt: skip
    for deployable in present_deployables():
        image = f"{registry}/{IMAGE_REPOSITORY_PREFIX}/{deployable.name}:{image_tag}"
        dockerfile = REPO / "deploy" / "docker" / f"{deployable.name}.Dockerfile"
        subprocess.run(["docker", "build", "--platform", "linux/arm64", "-f", str(dockerfile),
                        "-t", image, str(REPO)], check=True)  # fmt: skip
        subprocess.run(["docker", "push", image], check=True)


def deploy(*, env: str, region: str, image_tag: str, out: Path) -> None:
    """Bootstrap the Region, push images, upload a build and deploy the platform (AWS CLI)."""
    build = stage(out)
    registry_stack = f"checkout-{env}-registry"
    _aws("cloudformation", "deploy", "--region", region, "--stack-name", registry_stack,
         "--template-file", str(build.directory / "templates" / "registry.json"),
         "--no-fail-on-empty-changeset")  # fmt: skip
    bucket = _aws("cloudformation", "describe-stacks", "--region", region, "--stack-name",
                  registry_stack, "--query",
                  "Stacks[0].Outputs[?OutputKey=='ArtifactBucketName'].OutputValue",
                  "--output", "text")  # fmt: skip
    account = _aws("sts", "get-caller-identity", "--query", "Account", "--output", "text")
    push_images(
        region=region, image_tag=image_tag, registry=f"{account}.dkr.ecr.{region}.amazonaws.com"
    )
    _aws("s3", "sync", "--region", region, str(build.directory), f"s3://{bucket}/{build.build_id}")
    parameters = root_parameters(build, env=env, region=region) | {
        "ArtifactBucket": bucket,
        "ImageTag": image_tag,
    }
    if parameters.get("DatabaseGlobalRole") == "secondary":
        # The primary's credentials secret, replicated here: its ARN ends in a random suffix.
        parameters.setdefault(
            "PrimaryDatabaseSecretArn",
            _aws("secretsmanager", "describe-secret", "--region", region, "--secret-id",
                 f"checkout/{parameters['EnvironmentName']}/database", "--query", "ARN",
                 "--output", "text"),
        )  # fmt: skip
    overrides = [f"{key}={value}" for key, value in sorted(parameters.items())]
    _aws("cloudformation", "deploy", "--region", region, "--stack-name", f"checkout-{env}",
         "--template-file", str(build.directory / "templates" / "root.yaml"),
         "--s3-bucket", bucket, "--s3-prefix", f"{build.build_id}/root",
         "--capabilities", "CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND",
         "--no-fail-on-empty-changeset", "--parameter-overrides", *overrides)  # fmt: skip
    print(f"deployed build {build.build_id} (images :{image_tag}) to checkout-{env} in {region}")


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: render, build or deploy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="write the generated templates")
    render.add_argument("--out", type=Path, default=REPO / "build" / "cfn")
    for name in ("build", "deploy"):
        command = commands.add_parser(name)
        command.add_argument("--env", required=True)
        command.add_argument("--region", required=True)
        command.add_argument("--out", type=Path, default=REPO / "build" / "deploy")
    commands.choices["build"].add_argument("--no-lambda-dependencies", action="store_true")
    commands.choices["deploy"].add_argument("--image-tag", required=True)
    args = parser.parse_args(argv)
    if args.command == "render":
        for path in render_generated(args.out).values():
            print(path)
    elif args.command == "build":
        build = stage(args.out, lambda_dependencies=not args.no_lambda_dependencies)
        params = root_parameters(build, env=args.env, region=args.region)
        (build.directory / "parameters.json").write_text(json.dumps(params, indent=2) + "\n")
        print(build.directory)
    else:
        deploy(env=args.env, region=args.region, image_tag=args.image_tag, out=args.out)


if __name__ == "__main__":
    main()

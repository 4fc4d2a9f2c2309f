"""Least-privilege IAM for the tasks: roles and the policy statements of each capability."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .cfn import ref, sub
from .deployables import Deployable
from .queues import queue_arn


def capability_statements(name: str, queues: Sequence[str]) -> list[dict[str, Any]]:
    """The task role's statements for one named capability (least privilege)."""
    arn = "arn:${AWS::Partition}"
    statements: dict[str, list[dict[str, Any]]] = {
        "start_saga": [
            {
                "Effect": "Allow",
                "Action": ["states:StartExecution"],
                "Resource": sub(
                    f"{arn}:states:${{AWS::Region}}:${{AWS::AccountId}}:stateMachine:checkout"
                ),
            },
            {
                "Effect": "Allow",
                "Action": ["states:DescribeExecution"],
                "Resource": sub(
                    f"{arn}:states:${{AWS::Region}}:${{AWS::AccountId}}:execution:checkout:*"
                ),
            },
            # The state machine is encrypted with its own key (saga.yaml): starting and reading
            # an execution use it, through Step Functions only.
            {
                "Effect": "Allow",
                "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                "Resource": ref("SagaKeyArn"),
                "Condition": {
                    "StringEquals": {"kms:ViaService": sub("states.${AWS::Region}.amazonaws.com")}
                },
            },
        ],
        "publish_events": [
            {
                "Effect": "Allow",
                "Action": ["events:PutEvents"],
                "Resource": sub(
                    f"{arn}:events:${{AWS::Region}}:${{AWS::AccountId}}:event-bus/${{EventBusName}}"
                ),
            }
        ],
        "send_email": [
            {
                "Effect": "Allow",
                "Action": ["ses:SendEmail", "ses:SendRawEmail"],
                "Resource": sub(
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
                "Resource": ref("QueueKeyArn"),
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
            "Resource": sub(f"arn:${{AWS::Partition}}:s3:::${{{bucket_parameter}}}/*"),
        },
        {
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": sub(f"arn:${{AWS::Partition}}:s3:::${{{bucket_parameter}}}"),
        },
        {
            "Effect": "Allow",
            "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
            "Resource": ref("StorageKeyArn"),
        },
    ]


def consumer_statements(queue: str) -> list[dict[str, Any]]:
    """What a consumer may do with its queue and the queue key."""
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
        {"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": ref("QueueKeyArn")},
    ]


def telemetry_statements(deployable: Deployable, metric_logs: str | None) -> list[dict[str, Any]]:
    """What the ADOT sidecar needs to send the deployable's traces, and its metrics as EMF
    logs to its metric log group (collector.py) when it exports any."""
    # X-Ray has no resource-level permissions: these write-only actions take "*".
    statements: list[dict[str, Any]] = [
        {
            "Effect": "Allow",
            "Action": [
                "xray:PutTraceSegments",
                "xray:PutTelemetryRecords",
                "xray:GetSamplingRules",
                "xray:GetSamplingTargets",
            ],
            "Resource": "*",
        }
    ]
    if metric_logs is not None:
        # CloudWatch extracts the metrics from the EMF lines: no cloudwatch:PutMetricData.
        statements.append(
            {
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                "Resource": {"Fn::GetAtt": [metric_logs, "Arn"]},
            }
        )
    return statements


def role(service: str, policy_name: str, statements: list[dict[str, Any]]) -> dict[str, Any]:
    """An IAM role the service assumes (this account only) with one inline policy."""
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
                        "Condition": {"StringEquals": {"aws:SourceAccount": ref("AWS::AccountId")}},
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

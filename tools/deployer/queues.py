"""One declared SQS queue with its DLQ, policy and alarms, and the key that encrypts them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .cfn import logical_id, ref, sub


def queue_arn(name: str) -> dict[str, str]:
    """The ARN of a declared queue (queues keep their declared names: one account per env)."""
    return sub(f"arn:${{AWS::Partition}}:sqs:${{AWS::Region}}:${{AWS::AccountId}}:{name}")


def queue_key_policy() -> dict[str, Any]:
    """The queue key policy: the account administers it, EventBridge encrypts with it."""
    # EventBridge must encrypt what it sends to a queue under this key; nobody else may use it
    # beyond the account's own IAM policies.
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AccountAdministersTheKey",
                "Effect": "Allow",
                "Principal": {"AWS": sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root")},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "EventBridgeSendsToQueues",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:SourceAccount": ref("AWS::AccountId")}},
            },
        ],
    }


def queue_resources(queue: Mapping[str, Any], rule_names: Sequence[str]) -> dict[str, Any]:
    """A queue, its DLQ and their alarms; a policy if event rules send to it."""
    name, dlq = queue["name"], queue["dead_letter_queue"]
    queue_id, dlq_id = f"Queue{logical_id(name)}", f"Queue{logical_id(dlq)}"
    encryption = {"KmsMasterKeyId": ref("QueueKey"), "KmsDataKeyReusePeriodSeconds": 300}
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
                "Queues": [ref(queue_id)],
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
                                        {"Fn::GetAtt": [f"Rule{logical_id(rule)}", "Arn"]}
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
            "Threshold": ref(threshold) if isinstance(threshold, str) else threshold,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": [ref("AlarmTopicArn")],
            "OKActions": [ref("AlarmTopicArn")],
        },
    }

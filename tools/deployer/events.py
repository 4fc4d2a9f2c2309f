"""The events template: the EventBridge bus and rules and the queues of event_rules.json."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .cfn import logical_id, ref, skeleton, sub
from .paths import EVENT_RULES
from .queues import queue_key_policy, queue_resources


def read_event_rules(path: Path = EVENT_RULES) -> dict[str, Any]:
    """The routing rules and queue declarations the local bus reads."""
    rules: dict[str, Any] = json.loads(path.read_text())
    return rules


def render_events(rules: Mapping[str, Any]) -> dict[str, Any]:
    """The EventBridge bus, one rule per routing rule, and each declared queue with its DLQ."""
    template = skeleton(
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
            "Description": sub("${EnvironmentName} SQS queues and DLQs"),
            "EnableKeyRotation": True,
            "KeyPolicy": queue_key_policy(),
        },
    }
    bus_name = rules["event_bus_name"]
    resources["EventBus"] = {"Type": "AWS::Events::EventBus", "Properties": {"Name": bus_name}}
    queue_targets: dict[str, list[str]] = {}
    for rule in rules["rules"]:
        for target in rule["targets"]:
            queue_targets.setdefault(target, []).append(rule["name"])
    for queue in rules["queues"]:
        resources.update(queue_resources(queue, queue_targets.get(queue["name"], [])))
    for rule in rules["rules"]:
        resources[f"Rule{logical_id(rule['name'])}"] = {
            "Type": "AWS::Events::Rule",
            "Properties": {
                "Name": rule["name"],
                "EventBusName": ref("EventBus"),
                "EventPattern": rule["event_pattern"],
                "State": "ENABLED",
                "Targets": [
                    {
                        "Id": target,
                        "Arn": {"Fn::GetAtt": [f"Queue{logical_id(target)}", "Arn"]},
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
        "EventBusName": {"Value": ref("EventBus")},
        "EventBusArn": {"Value": {"Fn::GetAtt": ["EventBus", "Arn"]}},
        "QueueKeyArn": {"Value": {"Fn::GetAtt": ["QueueKey", "Arn"]}},
    }
    return template

"""The Prometheus alert rules (deploy/prometheus/rules.yml) and the CloudWatch alarms of the
templates (hand-written and rendered by tools/deployer) watch the same things: each rule names
its alarm, or with a `*` its family of alarms (one per dead-letter queue, as the rule alerts per
queue), no alarm is named twice, the rule's metric, threshold and duration are the alarm's, and
the alarms without a rule are exactly those on what only AWS measures."""

from __future__ import annotations

import json
import re
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools import deployer
from tools.deployer.cfn import logical_id
from tools.deployer.collector import METRICS_NAMESPACE, PROCESS_ALARMS

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules.yml"

# Alarms on what only AWS measures (the managed database, cache, load balancer, the Lambda
# adapters, ECS's running-task count) or what no rule alerts on yet: a queue's oldest message
# (checkout_queue_oldest_message_age_seconds is served locally, with no rule over it).
ALARMS_WITHOUT_RULE = {
    "cache.yaml/MemoryAlarm",
    "data.yaml/CpuAlarm",
    "data.yaml/ReplicationLagAlarm",
    "edge.yaml/ServerErrorsAlarm",
    "saga.yaml/AdapterErrorsAlarm",
    "services.json/*RunningTasksAlarm",
    "events.json/Queue*OldestMessageAlarm",
}
_COMPARISONS = {
    ">": "GreaterThanThreshold",
    ">=": "GreaterThanOrEqualToThreshold",
    "<": "LessThanThreshold",
}
_THRESHOLD = re.compile(r"^(?P<lhs>.+?)\s*(?P<op>>=|==|>|<)\s*(?P<value>[0-9.]+)$")


@pytest.fixture(scope="module")
def alarms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every CloudWatch alarm's properties, as "template/LogicalId"."""
    templates = {
        path.name: deployer.load_template(path)
        for path in sorted(deployer.TEMPLATES_DIR.glob("*.yaml"))
    }
    for name, path in deployer.render_generated(tmp_path_factory.mktemp("cfn")).items():
        templates[f"{name}.json"] = json.loads(path.read_text())
    found = {
        f"{stem}/{name}": resource["Properties"]
        for stem, template in templates.items()
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }
    # The payment account's stack holds services.json's payment alarms, deployed there instead
    # (PaymentAccountId): the same alarms, under the same names.
    elsewhere = {name for name in found if name.startswith("payment-account.json/")}
    for name in elsewhere:
        twin = name.replace("payment-account.json/", "services.json/")
        assert found[twin]["MetricName"] == found[name]["MetricName"], name
        assert found[twin]["Threshold"] == found[name]["Threshold"], name
        del found[name]
    assert elsewhere
    return found


def rules() -> dict[str, dict[str, Any]]:
    """Each alert rule by name."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def matched(pattern: str, alarms: dict[str, dict[str, Any]]) -> set[str]:
    """The alarms a rule's `cloudwatch_alarm` names (a `*` names a family)."""
    return {name for name in alarms if fnmatchcase(name, pattern)}


def seconds(duration: str) -> int:
    """A rule's `for` ("1m", "90s") in seconds."""
    value, unit = int(duration[:-1]), duration[-1]
    return value * {"s": 1, "m": 60, "h": 3600}[unit]


def test_the_templates_have_alarms_to_map(alarms: dict[str, dict[str, Any]]) -> None:
    assert len(alarms) >= 10


def test_each_rule_maps_to_its_own_alarms(alarms: dict[str, dict[str, Any]]) -> None:
    claimed: dict[str, str] = {}
    for rule, body in rules().items():
        pattern = body["annotations"]["cloudwatch_alarm"]
        found = matched(pattern, alarms)
        assert found, f"{rule} names {pattern}, which no template has"
        if "*" not in pattern:
            assert len(found) == 1, rule
        else:
            # A family of alarms is one alarm per member: the rule must alert per member too.
            assert " by (" in body["expr"], rule
        for alarm in found:
            assert alarm not in claimed, f"{rule} and {claimed.get(alarm)} both name {alarm}"
            claimed[alarm] = rule


def test_each_alarm_has_its_rule_or_is_measured_by_aws_only(
    alarms: dict[str, dict[str, Any]],
) -> None:
    named = {
        alarm
        for body in rules().values()
        for alarm in matched(body["annotations"]["cloudwatch_alarm"], alarms)
    }
    unnamed = set(alarms) - named
    for pattern in ALARMS_WITHOUT_RULE:
        assert matched(pattern, alarms), f"{pattern} matches no alarm: drop it from the list"
    assert {a for a in unnamed if not any(fnmatchcase(a, p) for p in ALARMS_WITHOUT_RULE)} == set()
    assert not named & {a for a in alarms if any(fnmatchcase(a, p) for p in ALARMS_WITHOUT_RULE)}


def test_the_dead_letter_rule_is_one_alarm_per_declared_dlq(
    alarms: dict[str, dict[str, Any]],
) -> None:
    rule = rules()["CheckoutDeadLetterQueueNotEmpty"]
    found = matched(rule["annotations"]["cloudwatch_alarm"], alarms)
    declared = {q["dead_letter_queue"] for q in deployer.read_event_rules()["queues"]}
    watched = {}
    for name in found:
        alarm = alarms[name]
        assert alarm["Namespace"] == "AWS/SQS"
        assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
        (dimension,) = alarm["Dimensions"]
        queue_id = dimension["Value"]["Fn::GetAtt"][0]
        watched[queue_id] = name
        # The rule: more than 0 messages for 1m; the alarm: the maximum over 60 s above 0.
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
        assert alarm["Period"] * alarm["EvaluationPeriods"] == seconds(rule["for"])
    assert set(watched) == {f"Queue{logical_id(dlq)}" for dlq in declared}
    assert rule["expr"].startswith('max by (queue) (checkout_queue_messages{dlq="true"}) > 0')


@pytest.mark.parametrize("process_alarm", PROCESS_ALARMS, ids=lambda a: a.name)
def test_a_process_metric_alarm_has_its_rule_s_metric_threshold_and_duration(
    process_alarm: Any, alarms: dict[str, dict[str, Any]]
) -> None:
    (rule,) = (
        body
        for body in rules().values()
        if body["annotations"]["cloudwatch_alarm"] == f"services.json/{process_alarm.name}"
    )
    alarm = alarms[f"services.json/{process_alarm.name}"]
    parsed = _THRESHOLD.match(rule["expr"])
    assert parsed is not None, rule["expr"]
    assert alarm["Namespace"] == METRICS_NAMESPACE
    assert re.search(rf"\b{alarm['MetricName']}\b", parsed["lhs"]), parsed["lhs"]
    assert parsed["lhs"].startswith("max"), "the alarm takes the Maximum over tasks and labels"
    assert alarm["Statistic"] == "Maximum"
    assert float(parsed["value"]) == alarm["Threshold"]
    if parsed["op"] == "==":
        # `== 1` on a 0/1 gauge (the breaker) is `>= 1`.
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == (
            "GreaterThanOrEqualToThreshold",
            1,
        )
    else:
        assert alarm["ComparisonOperator"] == _COMPARISONS[parsed["op"]]
    # `for: 2m` is two 60 s periods, each breaching.
    assert alarm["Period"] * alarm["EvaluationPeriods"] == seconds(rule["for"])
    assert alarm["DatapointsToAlarm"] == alarm["EvaluationPeriods"]


def test_the_issue_s_alerts_are_all_there() -> None:
    assert set(rules()) == {
        "CheckoutCompensationParked",
        "CheckoutSagaStuck",
        "CheckoutDeadLetterQueueNotEmpty",
        "CheckoutOutboxLag",
        "CheckoutPspBreakerOpen",
    }
    assert all(body["annotations"]["cloudwatch_alarm"] != "none" for body in rules().values())

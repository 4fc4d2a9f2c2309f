"""The Prometheus alert rules (deploy/prometheus/rules.yml) and the CloudWatch alarms of the
templates watch the same things: each rule names its alarm, no alarm is named twice, and the
rules and alarms without a counterpart are exactly the known gaps below."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
TEMPLATES = REPO / "deploy" / "ecs" / "templates"
_ALARM = re.compile(r"^  (\w+):\n    Type: AWS::CloudWatch::Alarm$", re.MULTILINE)

# Rules the templates have no alarm for yet (the SQS DLQs, the outbox, the PSP breaker).
RULES_WITHOUT_ALARM = {
    "CheckoutDeadLetterQueueNotEmpty",
    "CheckoutOutboxLag",
    "CheckoutPspBreakerOpen",
}
# Alarms on what only AWS measures (the managed database, cache, load balancer, the Lambda
# adapters): the local stack exports no metric for them.
ALARMS_WITHOUT_RULE = {
    "cache.yaml/MemoryAlarm",
    "data.yaml/CpuAlarm",
    "data.yaml/ReplicationLagAlarm",
    "edge.yaml/ServerErrorsAlarm",
    "saga.yaml/AdapterErrorsAlarm",
}


def template_alarms() -> set[str]:
    """Every CloudWatch alarm of the templates, as "template.yaml/LogicalId"."""
    return {
        f"{template.name}/{name}"
        for template in sorted(TEMPLATES.glob("*.yaml"))
        for name in _ALARM.findall(template.read_text())
    }


def rule_alarms() -> dict[str, str]:
    """Each alert rule's name and the alarm it names ("none": no alarm)."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {
        rule["alert"]: rule["annotations"]["cloudwatch_alarm"]
        for group in groups
        for rule in group["rules"]
    }


def test_the_templates_have_alarms_to_map() -> None:
    assert len(template_alarms()) >= 2


def test_each_rule_maps_to_its_own_alarm_or_is_a_known_gap() -> None:
    rules = rule_alarms()
    named = [alarm for alarm in rules.values() if alarm != "none"]
    assert len(named) == len(set(named)), "two rules name one alarm"
    assert set(named) <= template_alarms(), "a rule names an alarm the templates lack"
    assert {rule for rule, alarm in rules.items() if alarm == "none"} == RULES_WITHOUT_ALARM


def test_each_alarm_has_its_rule_or_is_measured_by_aws_only() -> None:
    named = set(rule_alarms().values())
    assert template_alarms() - named == ALARMS_WITHOUT_RULE


def test_the_issue_s_alerts_are_all_there() -> None:
    assert set(rule_alarms()) == {
        "CheckoutCompensationParked",
        "CheckoutSagaStuck",
        *RULES_WITHOUT_ALARM,
    }

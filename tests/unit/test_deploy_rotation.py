"""The Lambdas in deploy/ecs/lambda against moto in server mode: the secret rotation (each
kind's four steps, as Secrets Manager runs them) and the API's origin authorizer."""

from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest

LAMBDA_DIR = Path(__file__).resolve().parents[2] / "deploy" / "ecs" / "lambda"
STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")


def load(name: str) -> ModuleType:
    """A Lambda's module, fresh (module state such as a cache starts empty)."""
    spec = importlib.util.spec_from_file_location(name, LAMBDA_DIR / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def aws(moto_endpoint: str, aws_credentials: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3, in the tests and in the Lambdas, talks to moto."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)


@pytest.fixture
def sm(aws: None) -> Any:
    return boto3.client("secretsmanager")


def new_secret(sm: Any, kind: str, value: str) -> str:
    arn: str = sm.create_secret(
        Name=f"checkout/test/{uuid.uuid4()}",
        SecretString=value,
        Tags=[{"Key": "rotation-kind", "Value": kind}],
    )["ARN"]
    return arn


def rotate(module: ModuleType, arn: str, token: str, steps: tuple[str, ...] = STEPS) -> None:
    for step in steps:
        module.handler({"SecretId": arn, "ClientRequestToken": token, "Step": step}, None)


def stage_value(sm: Any, arn: str, stage: str) -> str:
    value: str = sm.get_secret_value(SecretId=arn, VersionStage=stage)["SecretString"]
    return value


# --- rotate_secret -----------------------------------------------------------------------------


def test_a_generated_secret_gets_a_new_current_value_and_keeps_the_old_as_previous(
    sm: Any,
) -> None:
    rotation = load("rotate_secret")
    arn = new_secret(sm, "generated", "old-hs256-key")
    token = str(uuid.uuid4())

    rotate(rotation, arn, token, ("createSecret",))
    pending = stage_value(sm, arn, "AWSPENDING")
    rotate(rotation, arn, token)  # all four again: createSecret does nothing twice

    assert stage_value(sm, arn, "AWSCURRENT") == pending
    assert len(pending) == 64
    assert pending.isalnum()
    assert stage_value(sm, arn, "AWSPREVIOUS") == "old-hs256-key"
    stages = sm.describe_secret(SecretId=arn)["VersionIdsToStages"]
    assert "AWSCURRENT" in stages[token]
    # A finished rotation's token is done: running a step again changes nothing.
    rotate(rotation, arn, token, ("finishSecret",))
    assert stage_value(sm, arn, "AWSCURRENT") == pending


def test_a_step_for_a_version_that_is_not_pending_is_refused(sm: Any) -> None:
    rotation = load("rotate_secret")
    arn = new_secret(sm, "generated", "old")

    with pytest.raises(ValueError, match="not a pending version"):
        rotate(rotation, arn, str(uuid.uuid4()), ("setSecret",))
    assert stage_value(sm, arn, "AWSCURRENT") == "old"


def test_the_psp_key_rotates_only_to_a_value_an_operator_staged(sm: Any) -> None:
    rotation = load("rotate_secret")
    arn = new_secret(sm, "staged", "psp-key-1")

    with pytest.raises(ValueError, match="--version-stages STAGED"):
        rotate(rotation, arn, str(uuid.uuid4()))
    assert stage_value(sm, arn, "AWSCURRENT") == "psp-key-1"

    sm.put_secret_value(SecretId=arn, SecretString="psp-key-2", VersionStages=["STAGED"])
    rotate(rotation, arn, str(uuid.uuid4()))

    assert stage_value(sm, arn, "AWSCURRENT") == "psp-key-2"
    stages = sm.describe_secret(SecretId=arn)["VersionIdsToStages"]
    assert not any("STAGED" in labels for labels in stages.values())  # used once only


def test_the_redis_token_is_added_to_the_replication_group_before_it_becomes_current(
    sm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rotation = load("rotate_secret")
    elasticache = boto3.client("elasticache")
    group = f"rg-{uuid.uuid4().hex[:8]}"
    elasticache.create_replication_group(
        ReplicationGroupId=group, ReplicationGroupDescription="cache", Engine="redis"
    )
    monkeypatch.setenv("REPLICATION_GROUP_ID", group)
    monkeypatch.setenv("SECRET_FIELD", "token")
    arn = new_secret(sm, "redis", json.dumps({"token": "old-token", "note": "kept"}))
    sent: list[dict[str, Any]] = []
    # What the Lambda's ElastiCache client sends (moto keeps no AUTH token to read back).
    session = boto3.session.Session()
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", session)  # the Lambda's boto3.client uses it
    session.events.register(
        "provide-client-params.elasticache.ModifyReplicationGroup",
        lambda params, **_: sent.append(dict(params)),
    )

    rotate(rotation, arn, str(uuid.uuid4()))

    current = json.loads(stage_value(sm, arn, "AWSCURRENT"))
    assert current["note"] == "kept"
    assert current["token"] != "old-token"
    assert sent == [
        {
            "ReplicationGroupId": group,
            "AuthToken": current["token"],
            "AuthTokenUpdateStrategy": "ROTATE",
            "ApplyImmediately": True,
        }
    ]


def test_a_replicated_redis_token_is_added_to_both_regions_groups_before_it_becomes_current(
    sm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rotation = load("rotate_secret")
    here, standby = f"rg-{uuid.uuid4().hex[:8]}", f"checkout-{uuid.uuid4().hex[:8]}"
    boto3.client("elasticache").create_replication_group(
        ReplicationGroupId=here, ReplicationGroupDescription="cache", Engine="redis"
    )
    boto3.client("elasticache", region_name="eu-central-1").create_replication_group(
        ReplicationGroupId=standby, ReplicationGroupDescription="standby", Engine="redis"
    )
    monkeypatch.setenv("REPLICATION_GROUP_ID", here)
    monkeypatch.setenv("REPLICA_REPLICATION_GROUP", f"eu-central-1:{standby}")
    monkeypatch.setenv("SECRET_FIELD", "token")
    arn = new_secret(sm, "redis", json.dumps({"token": "old-token"}))
    sent: list[tuple[str, dict[str, Any]]] = []
    session = boto3.session.Session()
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", session)
    session.events.register(
        "provide-client-params.elasticache.ModifyReplicationGroup",
        lambda params, context, **_: sent.append((context["client_region"], dict(params))),
    )
    token = str(uuid.uuid4())

    rotate(rotation, arn, token, steps=("createSecret", "setSecret"))
    pending = json.loads(stage_value(sm, arn, "AWSPENDING"))["token"]
    assert json.loads(stage_value(sm, arn, "AWSCURRENT"))["token"] == "old-token"
    region = boto3.client("elasticache").meta.region_name
    assert [(r, params["ReplicationGroupId"], params["AuthToken"]) for r, params in sent] == [
        (region, here, pending),
        ("eu-central-1", standby, pending),
    ]
    assert all(p["AuthTokenUpdateStrategy"] == "ROTATE" for _, p in sent)
    rotate(rotation, arn, token, steps=("testSecret", "finishSecret"))
    assert json.loads(stage_value(sm, arn, "AWSCURRENT"))["token"] == pending


def test_the_origin_secret_is_set_as_cloudfronts_header(
    sm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rotation = load("rotate_secret")
    arn = new_secret(sm, "cloudfront", "old-origin-secret")
    cloudfront = boto3.client("cloudfront")
    header = {"HeaderName": "X-Origin-Verify", "HeaderValue": "old-origin-secret"}
    distribution = cloudfront.create_distribution(
        DistributionConfig={
            "CallerReference": str(uuid.uuid4()),
            "Comment": "test",
            "Enabled": True,
            "Origins": {
                "Quantity": 1,
                "Items": [
                    {
                        "Id": "http-api",
                        "DomainName": "api.example.com",
                        "CustomHeaders": {"Quantity": 1, "Items": [header]},
                        "CustomOriginConfig": {
                            "HTTPPort": 80,
                            "HTTPSPort": 443,
                            "OriginProtocolPolicy": "https-only",
                        },
                    }
                ],
            },
            "DefaultCacheBehavior": {
                "TargetOriginId": "http-api",
                "ViewerProtocolPolicy": "https-only",
                "CachePolicyId": "4135ea2d-6df8-44a3-9df3-4b5a84be39ad",
            },
        }
    )["Distribution"]
    monkeypatch.setenv("DISTRIBUTION_ID", distribution["Id"])
    monkeypatch.setenv("ORIGIN_HEADER", "X-Origin-Verify")

    rotate(rotation, arn, str(uuid.uuid4()))

    config = cloudfront.get_distribution_config(Id=distribution["Id"])["DistributionConfig"]
    headers = config["Origins"]["Items"][0]["CustomHeaders"]["Items"]
    assert headers == [
        {"HeaderName": "X-Origin-Verify", "HeaderValue": stage_value(sm, arn, "AWSCURRENT")}
    ]
    assert stage_value(sm, arn, "AWSCURRENT") != "old-origin-secret"


# --- origin_verify -----------------------------------------------------------------------------


@pytest.fixture
def origin_secret(sm: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    arn = new_secret(sm, "cloudfront", "origin-secret-1")
    monkeypatch.setenv("ORIGIN_SECRET_ARN", arn)
    monkeypatch.setenv("ORIGIN_HEADER", "X-Origin-Verify")
    return arn


def authorized(module: ModuleType, headers: dict[str, str] | None) -> bool:
    answer: dict[str, bool] = module.handler({"headers": headers}, None)
    return answer["isAuthorized"]


def test_only_requests_carrying_the_origin_secret_are_authorized(origin_secret: str) -> None:
    verify = load("origin_verify")

    assert authorized(verify, {"x-origin-verify": "origin-secret-1"})
    assert not authorized(verify, {"x-origin-verify": "origin-secret-2"})
    assert not authorized(verify, {"x-origin-verify": ""})
    assert not authorized(verify, {"authorization": "Bearer x"})
    assert not authorized(verify, None)


def test_during_a_rotation_both_the_old_and_the_new_value_are_authorized(
    sm: Any, origin_secret: str
) -> None:
    rotation, verify = load("rotate_secret"), load("origin_verify")
    token = str(uuid.uuid4())
    rotate(rotation, origin_secret, token, ("createSecret",))
    pending = stage_value(sm, origin_secret, "AWSPENDING")

    assert authorized(verify, {"x-origin-verify": "origin-secret-1"})
    assert authorized(verify, {"x-origin-verify": pending})

    rotate(rotation, origin_secret, token, ("finishSecret",))
    verify = load("origin_verify")  # a new instance, nothing cached
    assert authorized(verify, {"x-origin-verify": pending})
    assert authorized(verify, {"x-origin-verify": "origin-secret-1"})  # now AWSPREVIOUS
    assert not authorized(verify, {"x-origin-verify": "a-guess"})

"""Secrets Manager rotation for the secrets AWS has no managed rotation for.

The secret's `rotation-kind` tag says how its next version is made and put to use:
generated (a random value: the gateway's HS256 key), staged (the PSP API key, which only the
PSP issues: an operator stages it as AWSPENDING first), redis (an ElastiCache AUTH token added
beside the old one, ROTATE, so clients on either keep working), cloudfront (the origin header
CloudFront sends the API). The four steps follow Secrets Manager's rotation contract; each is
idempotent, a retried step does nothing twice. The template embeds this file byte for byte.
"""

import json
import os
from typing import Any

import boto3  # type: ignore[import-untyped]

PENDING, CURRENT = "AWSPENDING", "AWSCURRENT"


def handler(event: dict[str, Any], context: object) -> None:
    arn, token, step = event["SecretId"], event["ClientRequestToken"], event["Step"]
    sm = boto3.client("secretsmanager")
    meta = sm.describe_secret(SecretId=arn)
    stages = meta["VersionIdsToStages"].get(token)
    if stages is None:
        raise ValueError(f"{token} is not a version of {arn}")
    if CURRENT in stages:
        return
    if PENDING not in stages and step != "createSecret":
        raise ValueError(f"{token} is not pending")
    kind = {t["Key"]: t["Value"] for t in meta.get("Tags", [])}["rotation-kind"]
    if step == "createSecret":
        create(sm, arn, token, kind)
    elif step == "setSecret":
        apply(kind, value(sm, arn, token))
    elif step == "testSecret":
        check(kind, value(sm, arn, token))
    elif step == "finishSecret":
        current = next(v for v, s in meta["VersionIdsToStages"].items() if CURRENT in s)
        sm.update_secret_version_stage(
            SecretId=arn, VersionStage=CURRENT, MoveToVersionId=token, RemoveFromVersionId=current
        )
    else:
        raise ValueError(f"unknown step {step}")


def value(sm: Any, arn: str, token: str) -> str:
    raw: str = sm.get_secret_value(SecretId=arn, VersionId=token)["SecretString"]
    field = os.environ.get("SECRET_FIELD")
    return str(json.loads(raw)[field]) if field else raw


def create(sm: Any, arn: str, token: str, kind: str) -> None:
    try:
        sm.get_secret_value(SecretId=arn, VersionId=token, VersionStage=PENDING)
        return
    except sm.exceptions.ResourceNotFoundException:
        if kind == "staged":
            raise ValueError(f"stage the new value of {arn} as {PENDING} first") from None
    new = sm.get_random_password(PasswordLength=64, ExcludePunctuation=True)["RandomPassword"]
    field = os.environ.get("SECRET_FIELD")
    if field:
        document = json.loads(
            sm.get_secret_value(SecretId=arn, VersionStage=CURRENT)["SecretString"]
        )
        new = json.dumps(document | {field: new})
    sm.put_secret_value(
        SecretId=arn, ClientRequestToken=token, SecretString=new, VersionStages=[PENDING]
    )


def apply(kind: str, new: str) -> None:
    if kind == "redis":
        boto3.client("elasticache").modify_replication_group(
            ReplicationGroupId=os.environ["REPLICATION_GROUP_ID"],
            AuthToken=new,
            AuthTokenUpdateStrategy="ROTATE",
            ApplyImmediately=True,
        )
    elif kind == "cloudfront":
        cloudfront = boto3.client("cloudfront")
        found = cloudfront.get_distribution_config(Id=os.environ["DISTRIBUTION_ID"])
        config = found["DistributionConfig"]
        for origin in config["Origins"]["Items"]:
            for header in origin.get("CustomHeaders", {}).get("Items", []):
                if header["HeaderName"] == os.environ["ORIGIN_HEADER"]:
                    header["HeaderValue"] = new
        cloudfront.update_distribution(
            Id=os.environ["DISTRIBUTION_ID"], IfMatch=found["ETag"], DistributionConfig=config
        )


def check(kind: str, new: str) -> None:
    if not new:
        raise ValueError("the pending value is empty")
    if kind == "redis":
        group = boto3.client("elasticache").describe_replication_groups(
            ReplicationGroupId=os.environ["REPLICATION_GROUP_ID"]
        )["ReplicationGroups"][0]
        if group["Status"] != "available":
            raise ValueError(f"the replication group is {group['Status']}; retried later")

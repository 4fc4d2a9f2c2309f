"""Secrets Manager rotation for the secrets AWS has no managed rotation for.

The secret's `rotation-kind` tag says how its next version is made and put to use:
generated (a random value: the gateway's HS256 key), staged (the PSP API key, which only the
PSP issues: an operator puts it first with `--version-stages STAGED`), redis (an ElastiCache
AUTH token added beside the old one, ROTATE, so clients on either keep working; also to the
standby Region's replication group when the token is replicated there, REPLICA_REPLICATION_GROUP
"<region>:<id>", before the new value becomes current in either Region), cloudfront
(the origin header CloudFront sends the API). The four steps follow Secrets Manager's rotation
contract; each is idempotent, a retried step does nothing twice. The templates embed this file
byte for byte.
"""

import json
import os
from typing import Any

import boto3  # type: ignore[import-untyped]

PENDING, CURRENT, STAGED = "AWSPENDING", "AWSCURRENT", "STAGED"


def handler(event: dict[str, Any], context: object) -> None:
    arn, token, step = event["SecretId"], event["ClientRequestToken"], event["Step"]
    sm = boto3.client("secretsmanager")
    meta = sm.describe_secret(SecretId=arn)
    stages = meta["VersionIdsToStages"].get(token, [])
    if CURRENT in stages:
        return  # a retried finishSecret, or a rotation already done
    if PENDING not in stages and step != "createSecret":
        raise ValueError(f"{token} is not a pending version of {arn}")
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
        for version, labels in meta["VersionIdsToStages"].items():
            if STAGED in labels:  # used: the next rotation waits for a newly staged value
                sm.update_secret_version_stage(
                    SecretId=arn, VersionStage=STAGED, RemoveFromVersionId=version
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
        pass
    if kind == "staged":
        try:
            new = sm.get_secret_value(SecretId=arn, VersionStage=STAGED)["SecretString"]
        except sm.exceptions.ResourceNotFoundException:
            raise ValueError(f"put {arn}'s new value with --version-stages {STAGED}") from None
    else:
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


def replication_groups() -> list[tuple[Any, str]]:
    """This Region's replication group, and the standby Region's when the token is replicated."""
    groups = [(boto3.client("elasticache"), os.environ["REPLICATION_GROUP_ID"])]
    replica = os.environ.get("REPLICA_REPLICATION_GROUP", "")
    if replica:
        region, group = replica.split(":", 1)
        groups.append((boto3.client("elasticache", region_name=region), group))
    return groups


def apply(kind: str, new: str) -> None:
    if kind == "redis":
        for elasticache, group in replication_groups():
            elasticache.modify_replication_group(
                ReplicationGroupId=group,
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
        for elasticache, group_id in replication_groups():
            group = elasticache.describe_replication_groups(ReplicationGroupId=group_id)[
                "ReplicationGroups"
            ][0]
            if group["Status"] != "available":
                raise ValueError(f"{group_id} is {group['Status']}; retried later")

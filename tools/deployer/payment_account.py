"""The payment stack for another account (the root stack's PaymentAccountId): the card-data
deployables' ECS services, deployed there instead of in the main account's services stack.

The main account shares with that account the payment subnets (network.yaml), payment's
security groups and the two Cloud Map namespaces (cluster.yaml); its database, Redis and PSP
secrets and their key admit this stack's two named roles (data.yaml, cache.yaml), and payment's
ECR repository lets its execution role pull (the registry). This stack holds what runs there:
a cluster of its own, per card-data deployable the same task definition, roles, service, scaling
and alarms as services.json renders (services.py), registered in the shared namespaces so the
main account's callers find `payment:50053` (Service Connect) and `payment.checkout.internal`
(Cloud Map DNS) as before, plus its own log key and alarm topic.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from .caller_graph import CARD_DATA, STORES, security_group
from .cfn import logical_id, ref, skeleton, sub
from .deployables import Deployable
from .paths import IMAGE_REPOSITORY_PREFIX
from .services import SERVICES_PARAMETERS, service_resources

CLUSTER = "checkout-${EnvironmentName}-payment"


def execution_role_name(deployable: str) -> str:
    """The named execution role the main account's secrets, key and repository admit."""
    return f"checkout-${{EnvironmentName}}-{deployable}-execution"


def task_role_name(deployable: str) -> str:
    """The named task role the main account's rotated secrets admit."""
    return f"checkout-${{EnvironmentName}}-{deployable}-task"


def _parameters(deployables: Iterable[Deployable]) -> dict[str, Any]:
    """What the main account's root stack outputs and this stack reads (README, step by step)."""
    kept = {
        name: spec
        for name, spec in SERVICES_PARAMETERS.items()
        if name
        not in {
            "ClusterName",
            "AppSubnetIds",
            "QueueKeyArn",
            "StorageKeyArn",
            "LogsKeyArn",
            "SagaKeyArn",
            "IdentityJwksUrl",
            "IdentityIssuer",
            "IdentityAudience",
            "EventBusName",
            "InvoiceBucketName",
            "ExportBucketName",
            "EmailIdentity",
            "AlarmTopicArn",
            "JwtSecretArn",
            "PaymentAccountId",
        }
        and not name.endswith("SecurityGroupId")
    }
    groups = {
        f"{security_group(name)}Id": {"Type": "AWS::EC2::SecurityGroup::Id"}
        for name in (*(d.name for d in deployables), *STORES)
        if name in CARD_DATA or name == "database"
    }
    return {
        "MainAccountId": {
            "Type": "String",
            "AllowedPattern": "\\d{12}",
            "Description": "the account of the root stack, which owns the VPC, secrets and images",
        },
        **kept,
        **groups,
        "ServiceConnectNamespaceArn": {
            "Type": "String",
            "Description": "the main account's checkout.sc namespace, shared with this account",
        },
        "DiscoveryNamespaceId": {
            "Type": "String",
            "Description": "the ARN of the main account's checkout.internal namespace (shared)",
        },
        "AlarmEmail": {"Type": "String", "Default": ""},
    }


def _retarget(value: Any) -> Any:
    """The main services stack's references, pointed at this stack's own resources."""
    replacements = {
        json.dumps(ref("ClusterName")): ref("Cluster"),
        json.dumps(ref("LogsKeyArn")): {"Fn::GetAtt": ["LogsKey", "Arn"]},
        json.dumps(ref("AlarmTopicArn")): ref("AlarmTopic"),
    }
    if isinstance(value, dict):
        found = replacements.get(json.dumps(value))
        if found is not None:
            return found
        if set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
            return sub(value["Fn::Sub"].replace("${ClusterName}", "${Cluster}"))
        return {key: _retarget(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_retarget(item) for item in value]
    return value


def _cross_account(deployable: Deployable, resources: dict[str, Any]) -> None:
    """Named roles (the main account admits them by name) and its image in the main account."""
    prefix = logical_id(deployable.name)
    execution = resources[f"{prefix}ExecutionRole"]["Properties"]
    execution["RoleName"] = sub(execution_role_name(deployable.name))
    resources[f"{prefix}TaskRole"]["Properties"]["RoleName"] = sub(task_role_name(deployable.name))
    for statement in execution["Policies"][0]["PolicyDocument"]["Statement"]:
        if "ecr:BatchGetImage" in statement["Action"]:
            statement["Resource"] = sub(
                "arn:${AWS::Partition}:ecr:${AWS::Region}:${MainAccountId}:repository/"
                f"{IMAGE_REPOSITORY_PREFIX}/{deployable.name}"
            )


def _key_and_topic() -> dict[str, Any]:
    account = {"AWS": sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root")}
    administers = {
        "Sid": "AccountAdministersTheKey",
        "Effect": "Allow",
        "Principal": account,
        "Action": "kms:*",
        "Resource": "*",
    }
    return {
        "LogsKey": {
            "Type": "AWS::KMS::Key",
            "Properties": {
                "Description": sub("${EnvironmentName} payment account log groups"),
                "EnableKeyRotation": True,
                "KeyPolicy": {
                    "Version": "2012-10-17",
                    "Statement": [
                        administers,
                        {
                            "Sid": "CloudWatchLogsEncryptsThisAccountsLogGroups",
                            "Effect": "Allow",
                            "Principal": {"Service": sub("logs.${AWS::Region}.${AWS::URLSuffix}")},
                            "Action": [
                                "kms:Encrypt*",
                                "kms:Decrypt*",
                                "kms:ReEncrypt*",
                                "kms:GenerateDataKey*",
                                "kms:Describe*",
                            ],
                            "Resource": "*",
                            "Condition": {
                                "ArnLike": {
                                    "kms:EncryptionContext:aws:logs:arn": sub(
                                        "arn:${AWS::Partition}:logs:${AWS::Region}:"
                                        "${AWS::AccountId}:log-group:*"
                                    )
                                }
                            },
                        },
                    ],
                },
            },
        },
        "AlarmKey": {
            "Type": "AWS::KMS::Key",
            "Properties": {
                "Description": sub("${EnvironmentName} payment account alarm notifications"),
                "EnableKeyRotation": True,
                "KeyPolicy": {
                    "Version": "2012-10-17",
                    "Statement": [
                        administers,
                        {
                            "Sid": "CloudWatchPublishesAlarms",
                            "Effect": "Allow",
                            "Principal": {"Service": "cloudwatch.amazonaws.com"},
                            "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                            "Resource": "*",
                        },
                    ],
                },
            },
        },
        "AlarmTopic": {
            "Type": "AWS::SNS::Topic",
            "Properties": {
                "TopicName": sub("checkout-${EnvironmentName}-payment-alarms"),
                "KmsMasterKeyId": ref("AlarmKey"),
                "Subscription": {
                    "Fn::If": [
                        "HasAlarmEmail",
                        [{"Endpoint": ref("AlarmEmail"), "Protocol": "email"}],
                        ref("AWS::NoValue"),
                    ]
                },
            },
        },
        "Cluster": {
            "Type": "AWS::ECS::Cluster",
            "Properties": {
                "ClusterName": sub(CLUSTER),
                "CapacityProviders": ["FARGATE"],
                "ClusterSettings": [{"Name": "containerInsights", "Value": "enhanced"}],
            },
        },
    }


def render_payment_account(
    deployables: Iterable[Deployable], rules: Mapping[str, Any]
) -> dict[str, Any]:
    """The stack the payment account deploys: the card-data deployables and what they need."""
    present = list(deployables)
    queues = [name for q in rules["queues"] for name in (q["name"], q["dead_letter_queue"])]
    template = skeleton(
        "The payment account: the card-data services, in the subnets and namespaces the main"
        " account shares (root stack parameter PaymentAccountId).",
        _parameters(present),
    )
    template["Conditions"] = {
        "IsStandby": {"Fn::Equals": [ref("Standby"), "true"]},
        "HasAlarmEmail": {"Fn::Not": [{"Fn::Equals": [ref("AlarmEmail"), ""]}]},
    }
    resources = template["Resources"]
    resources.update(_key_and_topic())
    for deployable in present:
        if deployable.name not in CARD_DATA:
            continue
        found = _retarget(service_resources(deployable, queues))
        _cross_account(deployable, found)
        resources.update(found)
        prefix = logical_id(deployable.name)
        template["Outputs"][f"{prefix}ServiceName"] = {
            "Value": {"Fn::GetAtt": [f"{prefix}Service", "Name"]}
        }
    template["Outputs"]["ClusterName"] = {"Value": ref("Cluster")}
    return template


# The payment stack's parameters that are the main account's root stack outputs, by name there.
FROM_ROOT_OUTPUTS: Mapping[str, str] = {
    "PaymentSubnetIds": "PaymentSubnetIds",
    "PaymentSecurityGroupId": "PaymentSecurityGroupId",
    "DatabaseClientsSecurityGroupId": "DatabaseClientsSecurityGroupId",
    "ServiceConnectNamespaceArn": "ServiceConnectNamespaceArn",
    "DiscoveryNamespaceId": "DiscoveryNamespaceArn",  # a shared namespace is named by its ARN
    "DatabaseHost": "DatabaseHost",
    "DatabaseSecretArn": "DatabaseSecretArn",
    "RedisHost": "RedisHost",
    "RedisSecretArn": "RedisAuthSecretArn",
    "PspSecretArn": "PspApiKeySecretArn",
    "SecretsKeyArn": "SecretsKeyArn",
}


def payment_stack_parameters(
    root_outputs: Mapping[str, str],
    *,
    env: str,
    main_account: str,
    region: str,
    image_tag: str,
    psp_url: str,
) -> dict[str, str]:
    """The payment stack's parameters: the main account's root outputs and the deploy's inputs."""
    return {
        "EnvironmentName": env,
        "MainAccountId": main_account,
        "ImageRegistry": f"{main_account}.dkr.ecr.{region}.amazonaws.com",
        "ImageTag": image_tag,
        "PspUrl": psp_url,
        **{parameter: root_outputs[output] for parameter, output in FROM_ROOT_OUTPUTS.items()},
    }

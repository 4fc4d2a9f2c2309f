"""The per-Region bootstrap template: the artifact bucket and the ECR repositories."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .caller_graph import CARD_DATA
from .cfn import logical_id, ref, skeleton, sub
from .deployables import Deployable
from .paths import IMAGE_REPOSITORY_PREFIX


def render_registry(deployables: Iterable[Deployable]) -> dict[str, Any]:
    """The per-Region bootstrap: the artifact bucket and one ECR repository per deployable."""
    template = skeleton(
        "Artifact bucket and ECR repositories, deployed before the platform stack.",
        {
            # The root stack's PaymentAccountId: that account's payment execution role pulls
            # the card-data deployables' images from here (payment_account.py).
            "PaymentAccountId": {"Type": "String", "AllowedPattern": "(\\d{12})?", "Default": ""}
        },
    )
    template["Conditions"] = {
        "PaymentElsewhere": {"Fn::Not": [{"Fn::Equals": [ref("PaymentAccountId"), ""]}]}
    }
    resources = template["Resources"]
    resources["ArtifactBucket"] = {
        "Type": "AWS::S3::Bucket",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Metadata": {
            "checkov": {
                "skip": [
                    {
                        "id": "CKV_AWS_18",
                        "comment": "build artifacts under content-hashed keys, written by the"
                        " deployer alone; the bootstrap has no log bucket to send access logs to",
                    }
                ]
            }
        },
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
        properties: dict[str, Any] = {
            "RepositoryName": f"{IMAGE_REPOSITORY_PREFIX}/{deployable.name}",
            "ImageTagMutability": "IMMUTABLE",
            "ImageScanningConfiguration": {"ScanOnPush": True},
            "EncryptionConfiguration": {"EncryptionType": "KMS"},
        }
        if deployable.name in CARD_DATA:
            properties["RepositoryPolicyText"] = {
                "Fn::If": ["PaymentElsewhere", pull_policy(deployable.name), ref("AWS::NoValue")]
            }
        resources[f"{logical_id(deployable.name)}Repository"] = {
            "Type": "AWS::ECR::Repository",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": properties,
        }
    template["Outputs"] = {"ArtifactBucketName": {"Value": ref("ArtifactBucket")}}
    return template


def pull_policy(deployable: str) -> dict[str, Any]:
    """The repository policy: the payment account's execution role of the deployable pulls."""
    role = (
        f"arn:${{AWS::Partition}}:iam::${{PaymentAccountId}}:role/checkout-*-{deployable}-execution"
    )
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PaymentAccountPulls",
                "Effect": "Allow",
                "Principal": {"AWS": sub("arn:${AWS::Partition}:iam::${PaymentAccountId}:root")},
                "Action": [
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                ],
                "Condition": {"ArnLike": {"aws:PrincipalArn": sub(role)}},
            }
        ],
    }

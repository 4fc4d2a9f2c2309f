"""The per-Region bootstrap template: the artifact bucket and the ECR repositories."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .cfn import logical_id, ref, skeleton
from .deployables import Deployable
from .paths import IMAGE_REPOSITORY_PREFIX


def render_registry(deployables: Iterable[Deployable]) -> dict[str, Any]:
    """The per-Region bootstrap: the artifact bucket and one ECR repository per deployable."""
    template = skeleton(
        "Artifact bucket and ECR repositories, deployed before the platform stack.", {}
    )
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
        resources[f"{logical_id(deployable.name)}Repository"] = {
            "Type": "AWS::ECR::Repository",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "RepositoryName": f"{IMAGE_REPOSITORY_PREFIX}/{deployable.name}",
                "ImageTagMutability": "IMMUTABLE",
                "ImageScanningConfiguration": {"ScanOnPush": True},
                "EncryptionConfiguration": {"EncryptionType": "KMS"},
            },
        }
    template["Outputs"] = {"ArtifactBucketName": {"Value": ref("ArtifactBucket")}}
    del template["Parameters"]
    return template

"""The services template: per deployable its task, roles, ECS service, scaling and alarms."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .caller_graph import CARD_DATA, STORES, carried_security_groups, security_group
from .cfn import logical_id, ref, skeleton, sub, unless_standby
from .collector import metric_log_group, metric_resources
from .deployables import DEPLOYABLES, Deployable
from .iam import capability_statements, consumer_statements, role, telemetry_statements
from .paths import IMAGE_REPOSITORY_PREFIX
from .tasks import SECRETS, rotated_secrets, task_definition

SERVICES_PARAMETERS: Mapping[str, Any] = {
    "EnvironmentName": {"Type": "String"},
    "ClusterName": {"Type": "String"},
    "ServiceConnectNamespaceArn": {"Type": "String"},
    "DiscoveryNamespaceId": {"Type": "String"},
    "AppSubnetIds": {"Type": "List<AWS::EC2::Subnet::Id>"},
    # The card-data deployables' own subnets (network.yaml), used by nothing else.
    "PaymentSubnetIds": {"Type": "List<AWS::EC2::Subnet::Id>"},
    # Each deployable's own security group and the data stores' clients groups (cluster.yaml).
    **{
        f"{security_group(name)}Id": {"Type": "AWS::EC2::SecurityGroup::Id"}
        for name in (*(d.name for d in DEPLOYABLES), *STORES)
    },
    "ImageRegistry": {"Type": "String", "Description": "<account>.dkr.ecr.<region>.amazonaws.com"},
    "ImageTag": {"Type": "String"},
    "DatabaseHost": {"Type": "String"},
    "DatabasePort": {"Type": "String", "Default": "5432"},
    "DatabaseName": {"Type": "String", "Default": "marketplace"},
    "DatabaseSecretArn": {"Type": "String"},
    "RedisHost": {"Type": "String"},
    "RedisSecretArn": {"Type": "String"},
    "JwtSecretArn": {"Type": "String"},
    "PspSecretArn": {"Type": "String"},
    "PspUrl": {"Type": "String"},
    "SecretsKeyArn": {"Type": "String"},
    "QueueKeyArn": {"Type": "String"},
    "StorageKeyArn": {"Type": "String"},
    "LogsKeyArn": {"Type": "String", "Description": "the log groups' KMS key (root.yaml)"},
    "SagaKeyArn": {"Type": "String", "Description": "the state machine's KMS key (saga.yaml)"},
    # The gateway's production tokens (data.yaml's user pool): GATEWAY_JWKS_URL and the claims.
    "IdentityJwksUrl": {"Type": "String"},
    "IdentityIssuer": {"Type": "String"},
    "IdentityAudience": {"Type": "String"},
    "EventBusName": {"Type": "String"},
    "InvoiceBucketName": {"Type": "String"},
    "ExportBucketName": {"Type": "String"},
    "EmailIdentity": {"Type": "String"},
    "AlarmTopicArn": {"Type": "String"},
    "LogRetentionDays": {"Type": "Number", "Default": 30},
    # OTEL_TRACES_SAMPLER_ARG of every task: the share of new traces sampled (parent-based).
    "TraceSamplingRatio": {
        "Type": "String",
        "AllowedPattern": "(0(\\.[0-9]+)?|1(\\.0+)?)",
        "Default": "1.0",
    },
    # A warm standby Region (the Global Database secondary) runs no tasks until failover.
    "Standby": {"Type": "String", "AllowedValues": ["true", "false"], "Default": "false"},
    # Set: the card-data deployables run in that account (payment_account.py), not here.
    "PaymentAccountId": {"Type": "String", "AllowedPattern": "(\\d{12})?", "Default": ""},
    # REGION_EPOCH of every task: the Region epoch it writes as (marketplace_platform.fence).
    "RegionEpoch": {"Type": "String", "AllowedPattern": "[1-9][0-9]*", "Default": "1"},
}


def render_services(deployables: Iterable[Deployable], rules: Mapping[str, Any]) -> dict[str, Any]:
    """One Fargate service per deployable: task definition, roles, logs, scaling and alarms."""
    queues = [name for q in rules["queues"] for name in (q["name"], q["dead_letter_queue"])]
    template = skeleton(
        "ECS on Fargate: one service per gRPC service, the gateway and each worker.",
        SERVICES_PARAMETERS,
    )
    template["Conditions"] = {
        "IsStandby": {"Fn::Equals": [ref("Standby"), "true"]},
        "PaymentHere": {"Fn::Equals": [ref("PaymentAccountId"), ""]},
    }
    # The workers' parameters stay declared while a declared worker is not yet in the repo.
    template["Metadata"] = {"cfn-lint": {"config": {"ignore_checks": ["W2001"]}}}
    for deployable in deployables:
        found = service_resources(deployable, queues)
        output: dict[str, Any] = {
            "Value": {"Fn::GetAtt": [f"{logical_id(deployable.name)}Discovery", "Arn"]}
        }
        if deployable.name in CARD_DATA:
            # With PaymentAccountId set, the payment account's stack runs them instead.
            for resource in found.values():
                resource["Condition"] = "PaymentHere"
            output["Condition"] = "PaymentHere"
        template["Resources"].update(found)
        if deployable.port is not None:
            template["Outputs"][f"{logical_id(deployable.name)}DiscoveryServiceArn"] = output
    return template


def service_resources(deployable: Deployable, queues: Sequence[str]) -> dict[str, Any]:
    """A deployable's log group, roles, task definition, service, scaling and alarms."""
    prefix = logical_id(deployable.name)
    secret_arns = sorted({param for kind in deployable.secrets for _, param, _ in SECRETS[kind]})
    task_statements = telemetry_statements(deployable, metric_log_group(deployable))
    for capability in deployable.permissions:
        task_statements += capability_statements(capability, queues)
    if deployable.queue is not None:
        task_statements += consumer_statements(deployable.queue)
    rotated = sorted(parameter for _, parameter in rotated_secrets(deployable))
    if rotated:
        # The process re-reads its rotated secrets' current version while it runs.
        task_statements += [
            {
                "Effect": "Allow",
                "Action": ["secretsmanager:GetSecretValue"],
                "Resource": [ref(param) for param in rotated],
            },
            {
                "Effect": "Allow",
                "Action": ["kms:Decrypt"],
                "Resource": ref("SecretsKeyArn"),
                "Condition": {
                    "StringEquals": {
                        "kms:ViaService": sub("secretsmanager.${AWS::Region}.amazonaws.com")
                    }
                },
            },
        ]
    resources: dict[str, Any] = {
        f"{prefix}Logs": {
            "Type": "AWS::Logs::LogGroup",
            "Properties": {
                "LogGroupName": sub(f"/checkout/${{EnvironmentName}}/{deployable.name}"),
                "RetentionInDays": ref("LogRetentionDays"),
                "KmsKeyId": ref("LogsKeyArn"),
            },
        },
        f"{prefix}ExecutionRole": role(
            "ecs-tasks.amazonaws.com",
            "pull-image-read-secrets",
            [
                {
                    "Effect": "Allow",
                    "Action": ["ecr:GetAuthorizationToken"],
                    "Resource": "*",  # the action has no resource-level permissions
                },
                {
                    "Effect": "Allow",
                    "Action": [
                        "ecr:BatchGetImage",
                        "ecr:GetDownloadUrlForLayer",
                        "ecr:BatchCheckLayerAvailability",
                    ],
                    "Resource": sub(
                        "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/"
                        f"{IMAGE_REPOSITORY_PREFIX}/{deployable.name}"
                    ),
                },
                {
                    "Effect": "Allow",
                    "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                    "Resource": {"Fn::GetAtt": [f"{prefix}Logs", "Arn"]},
                },
                {
                    "Effect": "Allow",
                    "Action": ["secretsmanager:GetSecretValue"],
                    "Resource": [ref(param) for param in secret_arns],
                },
                {"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": ref("SecretsKeyArn")},
            ],
        ),
        f"{prefix}TaskRole": role("ecs-tasks.amazonaws.com", "least-privilege", task_statements),
        f"{prefix}TaskDefinition": task_definition(deployable),
        f"{prefix}Service": _service(deployable),
        f"{prefix}ScalableTarget": {
            "Type": "AWS::ApplicationAutoScaling::ScalableTarget",
            "Properties": {
                "ServiceNamespace": "ecs",
                "ScalableDimension": "ecs:service:DesiredCount",
                "ResourceId": sub(f"service/${{ClusterName}}/${{{prefix}Service.Name}}"),
                "MinCapacity": unless_standby(deployable.min_tasks, 0),
                "MaxCapacity": deployable.max_tasks,
            },
        },
        f"{prefix}CpuScaling": {
            "Type": "AWS::ApplicationAutoScaling::ScalingPolicy",
            "Properties": {
                "PolicyName": sub(f"${{EnvironmentName}}-{deployable.name}-cpu"),
                "PolicyType": "TargetTrackingScaling",
                "ScalingTargetId": ref(f"{prefix}ScalableTarget"),
                "TargetTrackingScalingPolicyConfiguration": {
                    "TargetValue": 60,
                    "ScaleInCooldown": 120,
                    "ScaleOutCooldown": 30,
                    "PredefinedMetricSpecification": {
                        "PredefinedMetricType": "ECSServiceAverageCPUUtilization"
                    },
                },
            },
        },
        f"{prefix}RunningTasksAlarm": {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmDescription": f"{deployable.name}: fewer tasks running than its minimum",
                "Namespace": "ECS/ContainerInsights",
                "MetricName": "RunningTaskCount",
                "Dimensions": [
                    {"Name": "ClusterName", "Value": ref("ClusterName")},
                    {"Name": "ServiceName", "Value": {"Fn::GetAtt": [f"{prefix}Service", "Name"]}},
                ],
                "Statistic": "Minimum",
                "Period": 60,
                "EvaluationPeriods": 5,
                "Threshold": deployable.min_tasks,
                "ComparisonOperator": "LessThanThreshold",
                "TreatMissingData": "breaching",
                "ActionsEnabled": unless_standby(True, False),
                "AlarmActions": [ref("AlarmTopicArn")],
                "OKActions": [ref("AlarmTopicArn")],
            },
        },
    }
    resources |= metric_resources(deployable)
    if not deployable.long_running:
        for part in ("Service", "ScalableTarget", "CpuScaling", "RunningTasksAlarm"):
            del resources[f"{prefix}{part}"]
        return resources
    if deployable.port is not None:
        # The adapter Lambdas and API Gateway are outside Service Connect: they find the
        # service in Cloud Map private DNS (SRV carries the port API Gateway needs).
        record = {"Type": "SRV", "TTL": 10} if deployable.http else {"Type": "A", "TTL": 10}
        resources[f"{prefix}Discovery"] = {
            "Type": "AWS::ServiceDiscovery::Service",
            "Properties": {
                "Name": deployable.name,
                "NamespaceId": ref("DiscoveryNamespaceId"),
                "DnsConfig": {"DnsRecords": [record], "RoutingPolicy": "MULTIVALUE"},
                "HealthCheckCustomConfig": {"FailureThreshold": 1},
            },
        }
    return resources


def _service(deployable: Deployable) -> dict[str, Any]:
    prefix = logical_id(deployable.name)
    if deployable.critical:
        strategy = [{"CapacityProvider": "FARGATE", "Weight": 1}]
    else:
        # Interruptions only delay work: the queue keeps each message until it is deleted.
        strategy = [
            {"CapacityProvider": "FARGATE_SPOT", "Weight": 4},
            {"CapacityProvider": "FARGATE", "Weight": 1},
        ]
    service_connect: dict[str, Any] = {
        "Enabled": True,
        "Namespace": ref("ServiceConnectNamespaceArn"),
    }
    properties: dict[str, Any] = {
        "ServiceName": deployable.name,
        "Cluster": ref("ClusterName"),
        "TaskDefinition": ref(f"{prefix}TaskDefinition"),
        "DesiredCount": unless_standby(deployable.min_tasks, 0),
        "CapacityProviderStrategy": strategy,
        "PropagateTags": "SERVICE",
        "EnableECSManagedTags": True,
        "DeploymentConfiguration": {
            "MinimumHealthyPercent": 100,
            "MaximumPercent": 200,
            "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True},
        },
        "NetworkConfiguration": {
            "AwsvpcConfiguration": {
                "AssignPublicIp": "DISABLED",
                "Subnets": ref(
                    "PaymentSubnetIds" if deployable.name in CARD_DATA else "AppSubnetIds"
                ),
                "SecurityGroups": [
                    ref(f"{group}Id") for group in carried_security_groups(deployable.name)
                ],
            }
        },
        "ServiceConnectConfiguration": service_connect,
    }
    if deployable.port is not None:
        if not deployable.http:  # the gateway is called by the VPC link only, not in the mesh
            service_connect["Services"] = [
                {
                    "PortName": "grpc",
                    "DiscoveryName": deployable.name,
                    "ClientAliases": [{"Port": deployable.port, "DnsName": deployable.name}],
                }
            ]
        registry: dict[str, Any] = {"RegistryArn": {"Fn::GetAtt": [f"{prefix}Discovery", "Arn"]}}
        if deployable.http:
            registry |= {"ContainerName": "app", "ContainerPort": deployable.port}
        properties["ServiceRegistries"] = [registry]
    return {"Type": "AWS::ECS::Service", "Properties": properties}

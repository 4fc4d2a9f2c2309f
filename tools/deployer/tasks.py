"""A deployable's ECS task definition: the app container, its sidecar, settings and secrets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .caller_graph import STORE_USERS
from .cfn import logical_id, ref, sub
from .collector import METRICS_HOST, METRICS_PORT, collector_config, serves_metrics
from .deployables import DEPLOYABLES, Deployable
from .paths import ADOT_IMAGE, IMAGE_REPOSITORY_PREFIX, TELEMETRY_ENDPOINT

# Secrets each process may read, as (env var, secret parameter, JSON key or "").
SECRETS: Mapping[str, tuple[tuple[str, str, str], ...]] = {
    "database": (
        ("DB_USERNAME", "DatabaseSecretArn", "username"),
        ("DB_PASSWORD", "DatabaseSecretArn", "password"),
    ),
    "redis": (("REDIS_AUTH_TOKEN", "RedisSecretArn", "token"),),
    "jwt": (("GATEWAY_JWT_SECRET", "JwtSecretArn", ""),),
    "psp": (("PSP_API_KEY", "PspSecretArn", ""),),
}
# The rotated secrets a process re-reads while it runs (their current version, no restart), as
# (env var naming the secret, secret parameter): the task role may read them (services.py).
ROTATED_SECRETS: Mapping[str, tuple[str, str]] = {
    "redis": ("REDIS_AUTH_TOKEN_SECRET_ARN", "RedisSecretArn"),
    "jwt": ("GATEWAY_JWT_SECRET_ARN", "JwtSecretArn"),
    "psp": ("PSP_API_KEY_SECRET_ARN", "PspSecretArn"),
}


def rotated_secrets(deployable: Deployable) -> list[tuple[str, str]]:
    """The rotated secrets the process uses (the Redis token only if it connects to Redis)."""
    return [
        ROTATED_SECRETS[kind]
        for kind in deployable.secrets
        if kind in ROTATED_SECRETS and (kind != "redis" or deployable.name in STORE_USERS["redis"])
    ]


def health_command(deployable: Deployable) -> list[str]:
    """The container health check: the same script the image's HEALTHCHECK runs."""
    if deployable.port is None:
        probe = ["worker"]
    elif deployable.http:
        probe = ["http", str(deployable.port)]
    else:
        probe = ["grpc", str(deployable.port)]
    return ["CMD", "python", "/app/deploy/docker/healthcheck.py", *probe]


def _environment(deployable: Deployable) -> list[dict[str, Any]]:
    env: dict[str, Any] = {
        "APP_ENV": "production",
        "SERVICE_NAME": deployable.name,
        "LOG_LEVEL": "INFO",
        # marketplace_platform.settings.TracingSettings: spans over OTLP to the sidecar, which
        # sends them to X-Ray; the ratio of new traces sampled (parent-based).
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": TELEMETRY_ENDPOINT,
        "OTEL_TRACES_SAMPLER_ARG": ref("TraceSamplingRatio"),
        "OTEL_SERVICE_NAME": deployable.name,
        "AWS_REGION": ref("AWS::Region"),
        "REGION_EPOCH": ref("RegionEpoch"),
    }
    if serves_metrics(deployable):
        # /metrics for the sidecar's prometheus receiver (collector.py), inside the task only.
        env |= {"METRICS_HOST": METRICS_HOST, "METRICS_PORT": str(METRICS_PORT)}
    if "database" in deployable.secrets:
        env |= {
            "DB_HOST": ref("DatabaseHost"),
            "DB_PORT": ref("DatabasePort"),
            "DB_NAME": ref("DatabaseName"),
        }
    if "redis" in deployable.secrets:
        env["REDIS_HOST"] = ref("RedisHost")
    if "psp" in deployable.secrets:
        env["PSP_URL"] = ref("PspUrl")
    if "jwt" in deployable.secrets:
        # Production tokens: the identity provider's (data.yaml's Cognito user pool).
        env |= {
            "GATEWAY_JWKS_URL": ref("IdentityJwksUrl"),
            "GATEWAY_JWT_ISSUER": ref("IdentityIssuer"),
            "GATEWAY_JWT_AUDIENCE": ref("IdentityAudience"),
        }
    for name, parameter in rotated_secrets(deployable):
        env[name] = ref(parameter)
    if deployable.http:
        env["GATEWAY_PORT"] = str(deployable.port)
    elif deployable.port is not None:
        env |= {"GRPC_HOST": "0.0.0.0", "GRPC_PORT": str(deployable.port)}
    by_name = {d.name: d for d in DEPLOYABLES}
    for callee in deployable.calls:
        env[f"{callee.upper()}_TARGET"] = f"{callee}:{by_name[callee].port}"
    if "publish_events" in deployable.permissions:
        # workers.outbox_relay's settings; the rules file ships in the image at its default path.
        env |= {"RELAY_BUS": "eventbridge", "RELAY_EVENT_BUS_NAME": ref("EventBusName")}
    # workers.consumers' settings (ConsumerSettings and each consumer's own).
    if deployable.queue is not None:
        env |= {"QUEUE_BACKEND": "sqs", "CONSUMER_QUEUE": deployable.queue}
    if "write_invoices" in deployable.permissions:
        env |= {
            "INVOICE_STORE_URL": sub("s3://${InvoiceBucketName}/invoices"),
            "INVOICE_KMS_KEY_ID": ref("StorageKeyArn"),
        }
    if "write_exports" in deployable.permissions:
        # The root of analytics/order_facts/dt=YYYY-MM-DD/, where storage.yaml's Glue table reads.
        env |= {
            "ANALYTICS_SINK_URL": sub("s3://${ExportBucketName}/analytics"),
            "ANALYTICS_KMS_KEY_ID": ref("StorageKeyArn"),
        }
    if "send_email" in deployable.permissions:
        env |= {"MAILER_URL": "ses://", "EMAIL_SENDER": ref("EmailIdentity")}
    if "start_saga" in deployable.permissions:
        env["SAGA_STATE_MACHINE_ARN"] = sub(
            "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:stateMachine:checkout"
        )
    env |= deployable.env
    return [{"Name": name, "Value": value} for name, value in sorted(env.items())]


def _secrets(deployable: Deployable) -> list[dict[str, Any]]:
    secrets = []
    for kind in deployable.secrets:
        for env_name, param, key in SECRETS[kind]:
            value_from = sub(f"${{{param}}}:{key}::") if key else ref(param)
            secrets.append({"Name": env_name, "ValueFrom": value_from})
    return secrets


def task_definition(deployable: Deployable) -> dict[str, Any]:
    """The Fargate task definition: the app container and the ADOT collector sidecar."""
    prefix = logical_id(deployable.name)
    logging = {
        "LogDriver": "awslogs",
        "Options": {
            "awslogs-group": ref(f"{prefix}Logs"),
            "awslogs-region": ref("AWS::Region"),
            "awslogs-stream-prefix": deployable.name,
        },
    }
    app: dict[str, Any] = {
        "Name": "app",
        "Image": sub(
            f"${{ImageRegistry}}/{IMAGE_REPOSITORY_PREFIX}/{deployable.name}:${{ImageTag}}"
        ),
        "Essential": True,
        "Command": ["python", "-m", deployable.module],
        "Environment": _environment(deployable),
        "Secrets": _secrets(deployable),
        "HealthCheck": {
            "Command": health_command(deployable),
            "Interval": 15,
            "Timeout": 5,
            "Retries": 3,
            "StartPeriod": 30,
        },
        "StopTimeout": 30,
        "User": "10001:10001",
        "ReadonlyRootFilesystem": True,
        "MountPoints": [{"SourceVolume": "tmp", "ContainerPath": "/tmp"}],
        "LogConfiguration": logging,
        "DependsOn": [{"ContainerName": "otel-collector", "Condition": "START"}],
    }
    if deployable.port is not None:
        app["PortMappings"] = [
            {
                "Name": "http" if deployable.http else "grpc",
                "ContainerPort": deployable.port,
                "Protocol": "tcp",
                "AppProtocol": "http" if deployable.http else "grpc",
            }
        ]
    collector = {
        "Name": "otel-collector",
        "Image": ADOT_IMAGE,
        "Essential": False,  # losing traces or metrics must not stop checkout
        # The collector's env confmap provider reads its configuration from the variable.
        "Command": ["--config=env:AOT_CONFIG_CONTENT"],
        "Environment": [{"Name": "AOT_CONFIG_CONTENT", "Value": collector_config(deployable)}],
        "LogConfiguration": logging,
    }
    return {
        "Type": "AWS::ECS::TaskDefinition",
        "Properties": {
            "Family": sub(f"${{EnvironmentName}}-{deployable.name}"),
            "RequiresCompatibilities": ["FARGATE"],
            "NetworkMode": "awsvpc",
            "Cpu": str(deployable.cpu),
            "Memory": str(deployable.memory),
            "RuntimePlatform": {"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"},
            "ExecutionRoleArn": {"Fn::GetAtt": [f"{prefix}ExecutionRole", "Arn"]},
            "TaskRoleArn": {"Fn::GetAtt": [f"{prefix}TaskRole", "Arn"]},
            "Volumes": [{"Name": "tmp"}],
            "ContainerDefinitions": [app, collector],
        },
    }

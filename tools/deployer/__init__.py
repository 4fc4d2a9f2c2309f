"""Package and deploy the checkout platform to AWS (CloudFormation on ECS Fargate)."""

from .aws import deploy, push_images
from .cfn import load_template
from .deployables import (
    DEPLOYABLE_ROOTS,
    DEPLOYABLES,
    LOCAL_ONLY,
    Deployable,
    module_exists,
    present_deployables,
    runnable_modules,
)
from .events import read_event_rules, render_events
from .lambda_zip import build_lambda_zip
from .paths import (
    ADOT_IMAGE,
    ECS_DIR,
    EVENT_RULES,
    GENERATED_CONTRACTS,
    IMAGE_REPOSITORY_PREFIX,
    LAMBDA_PACKAGES,
    LAMBDA_PLATFORM,
    LAMBDA_REQUIREMENTS,
    PARAMS_DIR,
    REPO,
    SAGA_DEFINITION,
    SERVICE_CONNECT_NAMESPACE,
    TELEMETRY_ENDPOINT,
    TEMPLATES_DIR,
)
from .queues import queue_arn
from .registry import render_registry
from .render import render_generated
from .services import SERVICES_PARAMETERS, render_services
from .stage import Build, root_parameters, stage
from .tasks import health_command

__all__ = [
    "ADOT_IMAGE",
    "DEPLOYABLES",
    "DEPLOYABLE_ROOTS",
    "ECS_DIR",
    "EVENT_RULES",
    "GENERATED_CONTRACTS",
    "IMAGE_REPOSITORY_PREFIX",
    "LAMBDA_PACKAGES",
    "LAMBDA_PLATFORM",
    "LAMBDA_REQUIREMENTS",
    "LOCAL_ONLY",
    "PARAMS_DIR",
    "REPO",
    "SAGA_DEFINITION",
    "SERVICES_PARAMETERS",
    "SERVICE_CONNECT_NAMESPACE",
    "TELEMETRY_ENDPOINT",
    "TEMPLATES_DIR",
    "Build",
    "Deployable",
    "build_lambda_zip",
    "deploy",
    "health_command",
    "load_template",
    "module_exists",
    "present_deployables",
    "push_images",
    "queue_arn",
    "read_event_rules",
    "render_events",
    "render_generated",
    "render_registry",
    "render_services",
    "root_parameters",
    "runnable_modules",
    "stage",
]

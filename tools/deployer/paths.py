"""Where the deployment's inputs live in the repository, and the fixed names it deploys with."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ECS_DIR = REPO / "deploy" / "ecs"
TEMPLATES_DIR = ECS_DIR / "templates"
PARAMS_DIR = ECS_DIR / "params"
SAGA_DEFINITION = ECS_DIR / "checkout_saga.asl.json"
EVENT_RULES = ECS_DIR / "event_rules.json"
LAMBDA_REQUIREMENTS = ECS_DIR / "lambda" / "requirements.txt"
GENERATED_CONTRACTS = REPO / "gen" / "python"
# Our own packages the adapter Lambdas import; the contracts come from GENERATED_CONTRACTS.
LAMBDA_PACKAGES = ("saga_tasks", "marketplace_platform")
LAMBDA_PLATFORM = ("manylinux2014_aarch64", "3.12")  # the functions' Architectures and Runtime
ADOT_IMAGE = "public.ecr.aws/aws-observability/aws-otel-collector:v0.43.1"
IMAGE_REPOSITORY_PREFIX = "checkout"
SERVICE_CONNECT_NAMESPACE = "checkout.sc"  # ECS Service Connect, service to service
TELEMETRY_ENDPOINT = "http://127.0.0.1:4317"  # the ADOT sidecar in the same task

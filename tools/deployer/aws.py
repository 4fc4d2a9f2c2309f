"""The deploy step: bootstrap the Region, push images, upload a build, deploy (AWS CLI)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .deployables import present_deployables
from .paths import IMAGE_REPOSITORY_PREFIX, REPO
from .payment_account import payment_stack_parameters
from .stage import Build, root_parameters, stage


def _aws(*args: str) -> str:
    result = subprocess.run(["aws", *args], check=True, capture_output=True, text=True)
    return result.stdout.strip()


def push_images(*, region: str, image_tag: str, registry: str) -> None:
    """Build every present deployable's image and push it to its ECR repository."""
    login = _aws("ecr", "get-login-password", "--region", region)
    subprocess.run(["docker", "login", "--username", "AWS", "--password-stdin", registry],
                   input=login, text=True, check=True)  # fmt: skip
    for deployable in present_deployables():
        image = f"{registry}/{IMAGE_REPOSITORY_PREFIX}/{deployable.name}:{image_tag}"
        dockerfile = REPO / "deploy" / "docker" / f"{deployable.name}.Dockerfile"
        subprocess.run(["docker", "build", "--platform", "linux/arm64", "-f", str(dockerfile),
                        "-t", image, str(REPO)], check=True)  # fmt: skip
        subprocess.run(["docker", "push", image], check=True)


def edge_global(
    build: Build, *, env: str, region: str, parameters: dict[str, str]
) -> dict[str, str]:
    """Deploy what CloudFront takes from us-east-1 only (edge-global.yaml: the WAF web ACL and
    the viewer certificate) for this environment's distribution in `region`; its outputs."""
    stack = f"checkout-{env}-edge-{region}"
    _aws("cloudformation", "deploy", "--region", "us-east-1", "--stack-name", stack,
         "--template-file", str(build.directory / "templates" / "edge-global.yaml"),
         "--no-fail-on-empty-changeset", "--parameter-overrides", f"EnvironmentName={env}",
         f"EdgeRegion={region}", f"PublicDomainName={parameters['PublicDomainName']}",
         f"HostedZoneId={parameters['HostedZoneId']}")  # fmt: skip
    outputs = {}
    for output, parameter in (
        ("WebAclArn", "EdgeWebAclArn"),
        ("CertificateArn", "EdgeCertificateArn"),
    ):
        outputs[parameter] = _aws("cloudformation", "describe-stacks", "--region", "us-east-1",
                                  "--stack-name", stack, "--query",
                                  f"Stacks[0].Outputs[?OutputKey=='{output}'].OutputValue",
                                  "--output", "text")  # fmt: skip
    return outputs


def deploy(*, env: str, region: str, image_tag: str, out: Path) -> None:
    """Bootstrap the Region, push images, upload a build and deploy the platform (AWS CLI)."""
    build = stage(out)
    registry_stack = f"checkout-{env}-registry"
    # Payment in its own account: its execution role may pull payment's image from here.
    payment_account = root_parameters(build, env=env, region=region).get("PaymentAccountId", "")
    _aws("cloudformation", "deploy", "--region", region, "--stack-name", registry_stack,
         "--template-file", str(build.directory / "templates" / "registry.json"),
         "--no-fail-on-empty-changeset",
         "--parameter-overrides", f"PaymentAccountId={payment_account}")  # fmt: skip
    bucket = _aws("cloudformation", "describe-stacks", "--region", region, "--stack-name",
                  registry_stack, "--query",
                  "Stacks[0].Outputs[?OutputKey=='ArtifactBucketName'].OutputValue",
                  "--output", "text")  # fmt: skip
    account = _aws("sts", "get-caller-identity", "--query", "Account", "--output", "text")
    push_images(
        region=region, image_tag=image_tag, registry=f"{account}.dkr.ecr.{region}.amazonaws.com"
    )
    _aws("s3", "sync", "--region", region, str(build.directory), f"s3://{bucket}/{build.build_id}")
    parameters = root_parameters(build, env=env, region=region) | {
        "ArtifactBucket": bucket,
        "ImageTag": image_tag,
    }
    parameters |= edge_global(build, env=env, region=region, parameters=parameters)
    # The tasks' egress to S3 names the Region's AWS-managed prefix list (cluster.yaml).
    parameters.setdefault(
        "S3PrefixListId",
        _aws("ec2", "describe-managed-prefix-lists", "--region", region, "--filters",
             f"Name=prefix-list-name,Values=com.amazonaws.{region}.s3", "--query",
             "PrefixLists[0].PrefixListId", "--output", "text"),
    )  # fmt: skip
    if parameters.get("DatabaseGlobalRole") == "secondary":
        # The primary's secrets, replicated here: their ARNs end in a random suffix.
        for parameter, name in (
            ("PrimaryDatabaseSecretArn", "database"),
            ("PrimaryJwtSecretArn", "gateway-jwt"),
            ("PrimaryPspSecretArn", "psp-api-key"),
            ("PrimaryRedisSecretArn", "redis"),
        ):
            parameters.setdefault(
                parameter,
                _aws("secretsmanager", "describe-secret", "--region", region, "--secret-id",
                     f"checkout/{parameters['EnvironmentName']}/{name}", "--query", "ARN",
                     "--output", "text"),
            )  # fmt: skip
    overrides = [f"{key}={value}" for key, value in sorted(parameters.items())]
    _aws("cloudformation", "deploy", "--region", region, "--stack-name", f"checkout-{env}",
         "--template-file", str(build.directory / "templates" / "root.yaml"),
         "--s3-bucket", bucket, "--s3-prefix", f"{build.build_id}/root",
         "--capabilities", "CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND",
         "--no-fail-on-empty-changeset", "--parameter-overrides", *overrides)  # fmt: skip
    print(f"deployed build {build.build_id} (images :{image_tag}) to checkout-{env} in {region}")


def deploy_payment(*, env: str, region: str, image_tag: str, out: Path, profile: str) -> None:
    """Deploy payment-account.json in the payment account (the AWS CLI profile `profile`) from
    the main account's root stack outputs (the current credentials): deploy/ecs/README.md's
    "Payment in its own account", step 4, after `deploy` with PaymentAccountId set."""
    build = stage(out, lambda_dependencies=False)
    params = root_parameters(build, env=env, region=region)
    if not params.get("PaymentAccountId"):
        raise SystemExit(f"params/{env}/{region}.json sets no PaymentAccountId")
    listed = _aws("cloudformation", "describe-stacks", "--region", region, "--stack-name",
                  f"checkout-{env}", "--query", "Stacks[0].Outputs",
                  "--output", "json")  # fmt: skip
    outputs = {o["OutputKey"]: o["OutputValue"] for o in json.loads(listed)}
    main_account = _aws("sts", "get-caller-identity", "--query", "Account", "--output", "text")
    parameters = payment_stack_parameters(
        outputs, env=env, main_account=main_account, region=region, image_tag=image_tag,
        psp_url=params["PspUrl"],
    )  # fmt: skip
    overrides = [f"{key}={value}" for key, value in sorted(parameters.items())]
    _aws("cloudformation", "deploy", "--profile", profile, "--region", region, "--stack-name",
         f"checkout-{env}-payment", "--template-file",
         str(build.directory / "templates" / "payment-account.json"),
         "--capabilities", "CAPABILITY_NAMED_IAM", "--no-fail-on-empty-changeset",
         "--parameter-overrides", *overrides)  # fmt: skip
    print(f"deployed checkout-{env}-payment (images :{image_tag}) with profile {profile}")

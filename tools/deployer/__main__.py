"""The command line: `python -m tools.deployer render|build|deploy`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from .aws import deploy, deploy_payment
from .paths import REPO
from .render import render_generated
from .stage import root_parameters, stage

DESCRIPTION = "Package and deploy the checkout platform to AWS (CloudFormation on ECS Fargate)."
# `build` renders the generated templates (ECR repositories, ECS services, EventBridge rules and
# SQS queues) from the repository's own tables and files, stages every template, the saga's
# state machine definition (byte for byte) and the adapter Lambdas' zip under one content-hashed
# build id, and writes the root stack's parameters. `deploy` uploads a build and deploys it with
# the AWS CLI. `render` writes only the generated templates (for cfn-lint in `make lint`).
#
#     python -m tools.deployer build --env prod --region eu-west-1
#     python -m tools.deployer deploy --env prod --region eu-west-1 --image-tag <git sha>


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: render, build or deploy."""
    parser = argparse.ArgumentParser(prog="python -m tools.deployer", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="write the generated templates")
    render.add_argument("--out", type=Path, default=REPO / "build" / "cfn")
    for name in ("build", "deploy", "deploy-payment"):
        command = commands.add_parser(name)
        command.add_argument("--env", required=True)
        command.add_argument("--region", required=True)
        command.add_argument("--out", type=Path, default=REPO / "build" / "deploy")
    commands.choices["build"].add_argument("--no-lambda-dependencies", action="store_true")
    commands.choices["deploy"].add_argument("--image-tag", required=True)
    # Payment in its own account: the payment stack, with that account's AWS CLI profile.
    commands.choices["deploy-payment"].add_argument("--image-tag", required=True)
    commands.choices["deploy-payment"].add_argument("--profile", required=True)
    args = parser.parse_args(argv)
    if args.command == "render":
        for path in render_generated(args.out).values():
            print(path)
    elif args.command == "build":
        build = stage(args.out, lambda_dependencies=not args.no_lambda_dependencies)
        params = root_parameters(build, env=args.env, region=args.region)
        (build.directory / "parameters.json").write_text(json.dumps(params, indent=2) + "\n")
        print(build.directory)
    elif args.command == "deploy-payment":
        deploy_payment(
            env=args.env,
            region=args.region,
            image_tag=args.image_tag,
            out=args.out,
            profile=args.profile,
        )
    else:
        deploy(env=args.env, region=args.region, image_tag=args.image_tag, out=args.out)


if __name__ == "__main__":
    main()

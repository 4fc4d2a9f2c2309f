"""The templates' security and cost practices (deploy/ecs/README.md, "Security and cost"): every
store and log group under a customer-managed key, every secret rotated, WAF and TLS 1.2+ at the
edge, the API unusable around CloudFront, Athena bounded; and the Lambdas the templates embed are
the files in deploy/ecs/lambda, byte for byte."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tools import deployer

REPO = Path(__file__).resolve().parents[2]
LAMBDA_DIR = REPO / "deploy" / "ecs" / "lambda"


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every template by file stem: the hand-written ones and those the tool generates."""
    found = {
        path.stem: deployer.load_template(path)
        for path in sorted(deployer.TEMPLATES_DIR.glob("*.yaml"))
    }
    for name, path in deployer.render_generated(tmp_path_factory.mktemp("generated")).items():
        found[name] = json.loads(path.read_text())
    return found


def of_type(
    templates: dict[str, dict[str, Any]], kind: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    for stem, template in templates.items():
        for name, resource in template["Resources"].items():
            if resource["Type"] == kind:
                yield f"{stem}.{name}", resource.get("Properties", {})


# --- the Lambdas embedded in the templates -----------------------------------------------------


def embedded_functions(
    templates: dict[str, dict[str, Any]],
) -> Iterator[tuple[str, str]]:
    for stem, template in templates.items():
        for name, resource in template["Resources"].items():
            code = resource.get("Properties", {}).get("Code", {})
            if resource["Type"] == "AWS::Lambda::Function" and "ZipFile" in code:
                yield f"{stem}.{name}", code["ZipFile"]


def test_every_inline_function_is_a_file_in_deploy_ecs_lambda_byte_for_byte(
    templates: dict[str, dict[str, Any]],
) -> None:
    sources = {path.read_text(): path.name for path in LAMBDA_DIR.glob("*.py")}
    embedded = dict(embedded_functions(templates))

    assert embedded, "no inline function found"
    for name, code in embedded.items():
        assert code in sources, f"{name}'s ZipFile is not any file of deploy/ecs/lambda"
    assert {sources[code] for code in embedded.values()} == set(sources.values())


# --- the edge ----------------------------------------------------------------------------------


def test_cloudfront_is_behind_waf_with_tls_1_2_and_logs(
    templates: dict[str, dict[str, Any]],
) -> None:
    distributions = dict(of_type(templates, "AWS::CloudFront::Distribution"))

    assert set(distributions) == {"edge.Distribution"}
    config = distributions["edge.Distribution"]["DistributionConfig"]
    assert config["WebACLId"] == {"Ref": "WebAclArn"}
    assert config["ViewerCertificate"]["MinimumProtocolVersion"] == "TLSv1.2_2021"
    assert "CloudFrontDefaultCertificate" not in config["ViewerCertificate"]
    assert config["DefaultCacheBehavior"]["ViewerProtocolPolicy"] in {"https-only"}
    assert config["Logging"]["Bucket"] == {"Ref": "LogBucketDomainName"}
    for origin in config["Origins"]:
        assert origin["CustomOriginConfig"]["OriginSSLProtocols"] == ["TLSv1.2"]
    # The web ACL the distribution names is edge-global.yaml's, passed through the root stack.
    root = templates["root"]["Resources"]["Edge"]["Properties"]["Parameters"]
    assert root["WebAclArn"] == {"Ref": "EdgeWebAclArn"}


def test_the_web_acl_has_the_managed_rule_groups_and_a_rate_limit(
    templates: dict[str, dict[str, Any]],
) -> None:
    (acl,) = (p for _, p in of_type(templates, "AWS::WAFv2::WebACL"))
    statements = [rule["Statement"] for rule in acl["Rules"]]
    managed = {
        s["ManagedRuleGroupStatement"]["Name"]
        for s in statements
        if "ManagedRuleGroupStatement" in s
    }

    assert acl["Scope"] == "CLOUDFRONT"
    assert managed == {
        "AWSManagedRulesCommonRuleSet",
        "AWSManagedRulesKnownBadInputsRuleSet",
        "AWSManagedRulesAmazonIpReputationList",
    }
    (rate,) = (s["RateBasedStatement"] for s in statements if "RateBasedStatement" in s)
    assert rate["AggregateKeyType"] == "IP"
    assert all("Count" not in rule.get("OverrideAction", {}) for rule in acl["Rules"])
    assert len({rule["Priority"] for rule in acl["Rules"]}) == len(acl["Rules"])


def test_every_api_route_requires_the_origin_authorizer(
    templates: dict[str, dict[str, Any]],
) -> None:
    edge = templates["edge"]["Resources"]
    routes = [r["Properties"] for r in edge.values() if r["Type"] == "AWS::ApiGatewayV2::Route"]
    authorizer = edge["OriginAuthorizer"]["Properties"]
    headers = edge["Distribution"]["Properties"]["DistributionConfig"]["Origins"][0][
        "OriginCustomHeaders"
    ]

    assert routes
    for route in routes:
        assert route["AuthorizationType"] == "CUSTOM"
        assert route["AuthorizerId"] == {"Ref": "OriginAuthorizer"}
    assert authorizer["IdentitySource"] == [{"Fn::Sub": "$request.header.${OriginHeaderName}"}]
    assert headers == [
        {
            "HeaderName": {"Ref": "OriginHeaderName"},
            "HeaderValue": {"Fn::Sub": "{{resolve:secretsmanager:${OriginSecret}:SecretString}}"},
        }
    ]

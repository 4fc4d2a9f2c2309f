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


# --- encryption ----------------------------------------------------------------------------------

# Where each kind of store or log says which key encrypts it.
KEY_OF: dict[str, Any] = {
    "AWS::RDS::DBCluster": lambda p: p["KmsKeyId"],
    "AWS::ElastiCache::ReplicationGroup": lambda p: p["KmsKeyId"],
    "AWS::S3::Bucket": lambda p: p["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"
    ].get("KMSMasterKeyID"),
    "AWS::SQS::Queue": lambda p: p["KmsMasterKeyId"],
    "AWS::SNS::Topic": lambda p: p["KmsMasterKeyId"],
    "AWS::SecretsManager::Secret": lambda p: p["KmsKeyId"],
    "AWS::Logs::LogGroup": lambda p: p["KmsKeyId"],
    "AWS::StepFunctions::StateMachine": lambda p: p["EncryptionConfiguration"]["KmsKeyId"],
    "AWS::Athena::WorkGroup": lambda p: p["WorkGroupConfiguration"]["ResultConfiguration"][
        "EncryptionConfiguration"
    ]["KmsKey"],
}
# The buckets S3 itself keeps off SSE-KMS, with the reason.
SSE_S3_BUCKETS = {
    # S3 delivers server access logs only to SSE-S3 buckets.
    "storage.AccessLogBucket",
    # The per-Region bootstrap (tools/deployer/registry.py): build artifacts, no customer data,
    # deployed before any key of the platform exists.
    "registry.ArtifactBucket",
}


def names_a_customer_managed_key(template: dict[str, Any], key: Any) -> bool:
    """A key of this template, or a *KeyArn parameter (the root stack passes keys; checked in
    test_every_key_a_nested_stack_is_given_is_a_customer_managed_key)."""
    resources, parameters = template["Resources"], template.get("Parameters", {})
    if isinstance(key, dict) and "Ref" in key:
        name = key["Ref"]
        if name in parameters:
            return str(name).endswith("KeyArn")
        return bool(resources[name]["Type"] == "AWS::KMS::Key")
    if isinstance(key, dict) and "Fn::GetAtt" in key:
        name, attribute = key["Fn::GetAtt"]
        return bool(resources[name]["Type"] == "AWS::KMS::Key" and attribute == "Arn")
    return False


def test_every_store_log_group_secret_and_topic_names_a_customer_managed_key(
    templates: dict[str, dict[str, Any]],
) -> None:
    checked: set[str] = set()
    for stem, template in templates.items():
        for name, resource in template["Resources"].items():
            kind = resource["Type"]
            if kind not in KEY_OF or f"{stem}.{name}" in SSE_S3_BUCKETS:
                continue
            checked.add(kind)
            key = KEY_OF[kind](resource["Properties"])
            assert names_a_customer_managed_key(template, key), f"{stem}.{name}: {key}"
    assert checked == set(KEY_OF)


def test_every_key_a_nested_stack_is_given_is_a_customer_managed_key(
    templates: dict[str, dict[str, Any]],
) -> None:
    root = templates["root"]
    for stack in root["Resources"].values():
        if stack["Type"] != "AWS::CloudFormation::Stack":
            continue
        for parameter, value in stack["Properties"]["Parameters"].items():
            if not parameter.endswith("KeyArn"):
                continue
            source, attribute = value["Fn::GetAtt"]
            if attribute == "Arn":
                assert root["Resources"][source]["Type"] == "AWS::KMS::Key"
                continue
            child_url = root["Resources"][source]["Properties"]["TemplateURL"]["Fn::Sub"]
            child = templates[Path(child_url).stem]
            output = child["Outputs"][attribute.removeprefix("Outputs.")]["Value"]
            assert names_a_customer_managed_key(child, output), f"{source}.{attribute}"


def test_every_key_rotates(templates: dict[str, dict[str, Any]]) -> None:
    keys = dict(of_type(templates, "AWS::KMS::Key"))

    assert len(keys) >= 8
    for name, key in keys.items():
        assert key["EnableKeyRotation"] is True, name


def test_cloudwatch_logs_may_use_the_logs_key_only_for_this_accounts_log_groups(
    templates: dict[str, dict[str, Any]],
) -> None:
    statements = templates["root"]["Resources"]["LogsKey"]["Properties"]["KeyPolicy"]["Statement"]
    (logs,) = (s for s in statements if "Service" in s["Principal"])

    assert logs["Principal"]["Service"] == {"Fn::Sub": "logs.${AWS::Region}.${AWS::URLSuffix}"}
    assert "kms:*" not in logs["Action"]
    context = logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]["Fn::Sub"]
    assert context.endswith(":${AWS::AccountId}:log-group:*")


# --- secrets -----------------------------------------------------------------------------------


def test_every_secret_rotates(templates: dict[str, dict[str, Any]]) -> None:
    secrets = dict(of_type(templates, "AWS::SecretsManager::Secret"))
    schedules = {
        f"{name.split('.')[0]}.{schedule['SecretId']['Ref']}": schedule
        for name, schedule in of_type(templates, "AWS::SecretsManager::RotationSchedule")
    }

    assert {"data.DatabaseSecret", "data.JwtSecret", "data.PspSecret"} <= set(secrets)
    assert {"cache.AuthTokenSecret", "edge.OriginSecret"} <= set(secrets)
    assert set(schedules) == set(secrets)
    for name, schedule in schedules.items():
        assert "HostedRotationLambda" in schedule or "RotationLambdaARN" in schedule, name
        assert schedule["RotationRules"], name


def test_every_custom_rotation_runs_rotate_secret_py_for_a_kind_it_knows(
    templates: dict[str, dict[str, Any]],
) -> None:
    code = (LAMBDA_DIR / "rotate_secret.py").read_text()
    for name, schedule in of_type(templates, "AWS::SecretsManager::RotationSchedule"):
        if "RotationLambdaARN" not in schedule:
            continue
        stem = name.split(".")[0]
        resources = templates[stem]["Resources"]
        function = resources[schedule["RotationLambdaARN"]["Fn::GetAtt"][0]]["Properties"]
        secret = resources[schedule["SecretId"]["Ref"]]["Properties"]
        (kind,) = (t["Value"] for t in secret["Tags"] if t["Key"] == "rotation-kind")
        assert function["Code"]["ZipFile"] == code, name
        assert function["Handler"] == "index.handler"
        assert f'kind == "{kind}"' in code or kind == "generated", (name, kind)


# Secrets that stay in their Region, and why: the standby Region has its own distribution and
# API, so its own origin secret under the same name (a replica would collide with it).
PER_REGION_SECRETS = {"edge.OriginSecret"}


def test_every_secret_rotates_and_is_replicated_to_the_standby_region(
    templates: dict[str, dict[str, Any]],
) -> None:
    secrets = dict(of_type(templates, "AWS::SecretsManager::Secret"))
    schedules = {
        f"{name.split('.')[0]}.{schedule['SecretId']['Ref']}": name
        for name, schedule in of_type(templates, "AWS::SecretsManager::RotationSchedule")
    }
    for name, secret in secrets.items():
        stem, logical = name.split(".")
        resources = templates[stem]["Resources"]
        schedule = resources[schedules[name].split(".")[1]]
        # The schedule exists wherever the secret does.
        assert schedule.get("Condition") == resources[logical].get("Condition"), name
        if name in PER_REGION_SECRETS:
            assert "ReplicaRegions" not in secret, name
            continue
        replicas = secret["ReplicaRegions"]["Fn::If"]
        condition = templates[stem]["Conditions"][replicas[0]]
        assert replicas[1] == [{"Region": {"Ref": "SecondaryRegion"}}], name
        assert replicas[2] == {"Ref": "AWS::NoValue"}, name
        # Replicated from the primary of a global database to a named standby Region.
        assert {"Fn::Equals": [{"Ref": "GlobalRole"}, "primary"]} in _conditions(
            templates[stem], condition
        ), name
    assert set(secrets) - PER_REGION_SECRETS >= {
        "data.DatabaseSecret",
        "data.JwtSecret",
        "data.PspSecret",
        "cache.AuthTokenSecret",
    }


def _conditions(template: dict[str, Any], condition: Any) -> list[Any]:
    """A condition and every condition it is made of, expanded."""
    if isinstance(condition, dict) and {"Condition", "Fn::Condition"} & set(condition):
        (name,) = condition.values()  # `!Condition X` as this loader reads it: Fn::Condition
        return _conditions(template, template["Conditions"][name])
    if isinstance(condition, dict) and set(condition) <= {"Fn::And", "Fn::Or", "Fn::Not"}:
        (parts,) = condition.values()
        return [condition, *(c for part in parts for c in _conditions(template, part))]
    return [condition]


def test_the_standby_region_uses_the_replica_of_the_primary_s_redis_token(
    templates: dict[str, dict[str, Any]],
) -> None:
    cache = templates["cache"]
    assert cache["Resources"]["AuthTokenSecret"]["Condition"] == "OwnsToken"
    auth = cache["Resources"]["ReplicationGroup"]["Properties"]["AuthToken"]["Fn::If"]
    assert auth[0] == "IsSecondary"
    assert "${PrimaryAuthTokenSecretArn}" in auth[1]["Fn::Sub"]
    output = cache["Outputs"]["AuthTokenSecretArn"]["Value"]["Fn::If"]
    assert output == [
        "IsSecondary",
        {"Ref": "PrimaryAuthTokenSecretArn"},
        {"Ref": "AuthTokenSecret"},
    ]
    # The primary's rotation ROTATEs the standby's group, named the same in both Regions.
    group_id = cache["Resources"]["ReplicationGroup"]["Properties"]["ReplicationGroupId"]
    env = cache["Resources"]["RotateAuthTokenFunction"]["Properties"]["Environment"]["Variables"]
    replica = env["REPLICA_REPLICATION_GROUP"]["Fn::If"][1]["Fn::Sub"]
    assert replica == "${SecondaryRegion}:" + group_id["Fn::Sub"]
    root = templates["root"]["Resources"]["Cache"]["Properties"]["Parameters"]
    assert root["GlobalRole"] == {"Ref": "DatabaseGlobalRole"}
    assert root["PrimaryAuthTokenSecretArn"] == {"Ref": "PrimaryRedisSecretArn"}


# --- analytics and cost ------------------------------------------------------------------------


def test_the_athena_workgroup_caps_each_query_and_encrypts_its_results(
    templates: dict[str, dict[str, Any]],
) -> None:
    ((_, workgroup),) = of_type(templates, "AWS::Athena::WorkGroup")
    config = workgroup["WorkGroupConfiguration"]

    assert config["EnforceWorkGroupConfiguration"] is True
    assert config["BytesScannedCutoffPerQuery"] == {"Ref": "AthenaBytesScannedCutoff"}
    assert config["ResultConfiguration"]["EncryptionConfiguration"]["EncryptionOption"] == "SSE_KMS"
    default = templates["storage"]["Parameters"]["AthenaBytesScannedCutoff"]["Default"]
    assert 0 < default <= 100 * 2**30


def test_the_order_facts_table_projects_the_dt_partitions_of_the_analytics_layout(
    templates: dict[str, dict[str, Any]],
) -> None:
    ((_, table),) = of_type(templates, "AWS::Glue::Table")
    table_input = table["TableInput"]
    parameters = table_input["Parameters"]

    assert table_input["PartitionKeys"] == [{"Name": "dt", "Type": "string"}]
    assert parameters["projection.enabled"] == "true"
    assert parameters["projection.dt.type"] == "date"
    assert parameters["projection.dt.format"] == "yyyy-MM-dd"
    assert parameters["storage.location.template"] == {
        "Fn::Sub": "s3://${ExportBucket}/analytics/order_facts/dt=${!dt}/"
    }
    assert table_input["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"].endswith(
        "JsonSerDe"
    )


def test_old_documents_and_analytics_move_to_cheaper_storage_classes(
    templates: dict[str, dict[str, Any]],
) -> None:
    buckets = templates["storage"]["Resources"]

    def classes(bucket: str, prefix: str | None) -> list[str]:
        rules = buckets[bucket]["Properties"]["LifecycleConfiguration"]["Rules"]
        return [
            transition["StorageClass"]
            for rule in rules
            if rule.get("Prefix") == prefix
            for transition in rule.get("Transitions", [])
        ]

    assert classes("InvoiceBucket", None) == ["STANDARD_IA", "GLACIER_IR"]
    assert classes("ExportBucket", "analytics/") == ["STANDARD_IA", "GLACIER_IR"]

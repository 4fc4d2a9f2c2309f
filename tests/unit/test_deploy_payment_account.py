"""Payment in its own account (the root stack's PaymentAccountId): with it set, the main
account's stacks create no payment service and the payment account's stack (rendered as
payment-account.json) does, in the shared payment subnets and groups, registered in the shared
namespaces, pulling its image from the main account and reading exactly the main account's
secrets that admit its two named roles; the subnets are shared with that account alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tools import deployer
from tools.deployer.caller_graph import CARD_DATA, carried_security_groups
from tools.deployer.payment_account import FROM_ROOT_OUTPUTS, payment_stack_parameters
from tools.deployer.services import service_resources

ACCOUNT = "210987654321"


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    found = {
        p.stem: deployer.load_template(p) for p in sorted(deployer.TEMPLATES_DIR.glob("*.yaml"))
    }
    for name, path in deployer.render_generated(tmp_path_factory.mktemp("cfn")).items():
        found[name] = json.loads(path.read_text())
    return found


def condition_holds(template: dict[str, Any], condition: Any, params: dict[str, str]) -> bool:
    """A condition's value for the given parameters (the rest at their defaults)."""
    if isinstance(condition, str):
        return condition_holds(template, template["Conditions"][condition], params)
    if isinstance(condition, bool):
        return condition
    ((function, args),) = condition.items()
    if function in ("Condition", "Fn::Condition"):
        return condition_holds(template, args, params)
    if function == "Fn::Not":
        return not condition_holds(template, args[0], params)
    if function == "Fn::And":
        return all(condition_holds(template, arg, params) for arg in args)
    if function == "Fn::Or":
        return any(condition_holds(template, arg, params) for arg in args)
    if function == "Fn::Equals":
        left, right = (_value(template, arg, params) for arg in args)
        return bool(left == right)
    raise AssertionError(f"unknown condition function {function}")


def _value(template: dict[str, Any], value: Any, params: dict[str, str]) -> Any:
    if isinstance(value, dict) and set(value) == {"Ref"}:
        name = value["Ref"]
        return params.get(name, template["Parameters"].get(name, {}).get("Default"))
    return value


def created(template: dict[str, Any], params: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The resources the stack creates with these parameters."""
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if "Condition" not in resource or condition_holds(template, resource["Condition"], params)
    }


def services_named(resources: dict[str, dict[str, Any]]) -> set[str]:
    return {
        r["Properties"]["ServiceName"]
        for r in resources.values()
        if r["Type"] == "AWS::ECS::Service"
    }


def test_with_a_payment_account_the_main_stack_runs_no_payment_service(
    templates: dict[str, dict[str, Any]],
) -> None:
    services = templates["services"]
    here = created(services, {})
    elsewhere = created(services, {"PaymentAccountId": ACCOUNT})

    assert set(CARD_DATA) <= services_named(here)
    assert services_named(elsewhere) == services_named(here) - set(CARD_DATA)
    # Nothing of payment's is left behind: no task, role, log group, discovery or alarm.
    gone = set(here) - set(elsewhere)
    queues = [
        n
        for q in deployer.read_event_rules()["queues"]
        for n in (q["name"], q["dead_letter_queue"])
    ]
    card_data = [d for d in deployer.DEPLOYABLES if d.name in CARD_DATA]
    assert gone == {n for d in card_data for n in service_resources(d, queues)}
    assert {"PaymentService", "PaymentTaskDefinition", "PspBreakerOpenAlarm"} <= gone
    for name in gone:
        assert services["Resources"][name]["Condition"] == "PaymentHere"
    outputs = services["Outputs"]
    assert outputs["PaymentDiscoveryServiceArn"]["Condition"] == "PaymentHere"
    root = templates["root"]["Resources"]["Services"]["Properties"]["Parameters"]
    assert root["PaymentAccountId"] == {"Ref": "PaymentAccountId"}


def test_the_payment_account_s_stack_runs_the_payment_service_where_the_callers_find_it(
    templates: dict[str, dict[str, Any]],
) -> None:
    stack = templates["payment-account"]
    resources = stack["Resources"]
    (service,) = (r["Properties"] for r in resources.values() if r["Type"] == "AWS::ECS::Service")
    network = service["NetworkConfiguration"]["AwsvpcConfiguration"]

    assert service["ServiceName"] == "payment"
    assert service["Cluster"] == {"Ref": "Cluster"}
    assert resources["Cluster"]["Type"] == "AWS::ECS::Cluster"
    assert network["Subnets"] == {"Ref": "PaymentSubnetIds"}
    assert network["SecurityGroups"] == [
        {"Ref": f"{group}Id"} for group in carried_security_groups("payment")
    ]
    # Service Connect in the shared namespace: checkout and the consumers' payment:50053.
    connect = service["ServiceConnectConfiguration"]
    assert connect["Namespace"] == {"Ref": "ServiceConnectNamespaceArn"}
    (published,) = connect["Services"]
    assert published["ClientAliases"] == [{"Port": 50053, "DnsName": "payment"}]
    # Cloud Map DNS in the shared namespace: the adapters' payment.checkout.internal.
    (registry,) = service["ServiceRegistries"]
    discovery = resources[registry["RegistryArn"]["Fn::GetAtt"][0]]["Properties"]
    assert discovery["Name"] == "payment"
    assert discovery["NamespaceId"] == {"Ref": "DiscoveryNamespaceId"}
    main = templates["cluster"]["Resources"]["PaymentNamespaceShare"]["Properties"]
    assert main["ResourceArns"] == [
        {"Fn::GetAtt": ["ServiceConnectNamespace", "Arn"]},
        {"Fn::GetAtt": ["DiscoveryNamespace", "Arn"]},
    ]
    assert main["Principals"] == [{"Ref": "PaymentAccountId"}]
    # Its own log key and alarm topic; nothing refers to the main account's.
    text = json.dumps(stack)
    for parameter in ("LogsKeyArn", "AlarmTopicArn", "ClusterName"):
        assert f'"Ref": "{parameter}"' not in text, parameter
        assert "${" + parameter + "}" not in text, parameter


def test_every_parameter_of_the_payment_stack_is_a_root_output_or_a_deploy_input(
    templates: dict[str, dict[str, Any]],
) -> None:
    stack, root = templates["payment-account"], templates["root"]
    required = {n for n, spec in stack["Parameters"].items() if "Default" not in spec}
    # What `python -m tools.deployer deploy-payment` passes: each root output by its name.
    outputs = {name: f"<{name}>" for name in root["Outputs"]}
    parameters = payment_stack_parameters(
        outputs,
        env="prod",
        main_account="123456789012",
        region="eu-west-1",
        image_tag="abc123",
        psp_url="https://psp.example",
    )

    assert set(parameters) >= required
    assert set(parameters) <= set(stack["Parameters"])
    for parameter, output in FROM_ROOT_OUTPUTS.items():
        assert parameters[parameter] == f"<{output}>", parameter
    assert parameters["ImageRegistry"] == "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    # The outputs hold what the main account's own stacks are given under those names.
    services = root["Resources"]["Services"]["Properties"]["Parameters"]
    for parameter in ("DatabaseHost", "DatabaseSecretArn", "RedisHost", "SecretsKeyArn"):
        assert root["Outputs"][parameter]["Value"] == services[parameter], parameter
    assert root["Outputs"]["RedisAuthSecretArn"]["Value"] == services["RedisSecretArn"]
    assert root["Outputs"]["PspApiKeySecretArn"]["Value"] == services["PspSecretArn"]
    assert root["Outputs"]["PaymentSubnetIds"]["Value"] == services["PaymentSubnetIds"]


def _admitted(policy: dict[str, Any]) -> set[str]:
    (statement,) = policy["Properties"]["ResourcePolicy"]["Statement"]
    assert statement["Principal"] == {
        "AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${PaymentAccountId}:root"}
    }
    assert statement["Action"] == "secretsmanager:GetSecretValue"
    arns = statement["Condition"]["ArnEquals"]["aws:PrincipalArn"]
    return {arn["Fn::Sub"].rpartition("/")[2] for arn in arns}


def _role_reads(stack: dict[str, Any], role: str) -> set[str]:
    """The secret parameters a role of the payment stack may read."""
    statements = stack["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]
    found = set()
    for statement in statements["Statement"]:
        if "secretsmanager:GetSecretValue" in statement["Action"]:
            found |= {r["Ref"] for r in statement["Resource"]}
    return found


def test_the_main_account_s_secrets_admit_exactly_the_roles_that_read_them(
    templates: dict[str, dict[str, Any]],
) -> None:
    stack = templates["payment-account"]
    execution = stack["Resources"]["PaymentExecutionRole"]["Properties"]["RoleName"]["Fn::Sub"]
    task = stack["Resources"]["PaymentTaskRole"]["Properties"]["RoleName"]["Fn::Sub"]
    policies = {
        "DatabaseSecretArn": templates["data"]["Resources"]["DatabaseSecretPaymentPolicy"],
        "PspSecretArn": templates["data"]["Resources"]["PspSecretPaymentPolicy"],
        "RedisSecretArn": templates["cache"]["Resources"]["AuthTokenSecretPaymentPolicy"],
    }
    readers: dict[str, set[str]] = {parameter: set() for parameter in policies}
    for role, name in (("PaymentExecutionRole", execution), ("PaymentTaskRole", task)):
        for parameter in _role_reads(stack, role):
            readers[parameter].add(name)
    for parameter, policy in policies.items():
        assert _admitted(policy) == readers[parameter], parameter
        assert policy["Properties"]["BlockPublicPolicy"] is True
        template = templates["data" if parameter != "RedisSecretArn" else "cache"]
        assert condition_holds(template, policy["Condition"], {"PaymentAccountId": ACCOUNT})
        assert not condition_holds(template, policy["Condition"], {})
    # The key decrypts for those two roles, through Secrets Manager only.
    key = templates["data"]["Resources"]["SecretsKey"]["Properties"]["KeyPolicy"]
    (grant,) = [s for s in key["Statement"] if isinstance(s, dict) and "Fn::If" in s]
    condition, statement, _ = grant["Fn::If"]
    assert condition == "PaymentElsewhere"
    assert statement["Action"] == "kms:Decrypt"
    assert "kms:ViaService" in statement["Condition"]["StringEquals"]
    roles = {
        a["Fn::Sub"].rpartition("/")[2]
        for a in statement["Condition"]["ArnEquals"]["aws:PrincipalArn"]
    }
    assert roles == {execution, task}


def test_the_payment_image_is_pulled_from_the_main_account_by_its_execution_role(
    templates: dict[str, dict[str, Any]],
) -> None:
    stack = templates["payment-account"]
    (task,) = (r for r in stack["Resources"].values() if r["Type"] == "AWS::ECS::TaskDefinition")
    (app, _) = task["Properties"]["ContainerDefinitions"]
    assert app["Image"]["Fn::Sub"].startswith("${ImageRegistry}/checkout/payment:")
    role = stack["Resources"]["PaymentExecutionRole"]["Properties"]
    (pull,) = [
        s
        for s in role["Policies"][0]["PolicyDocument"]["Statement"]
        if "ecr:BatchGetImage" in s["Action"]
    ]
    assert ":${MainAccountId}:repository/checkout/payment" in pull["Resource"]["Fn::Sub"]
    repository = templates["registry"]["Resources"]["PaymentRepository"]["Properties"]
    condition, policy, _ = repository["RepositoryPolicyText"]["Fn::If"]
    assert condition == "PaymentElsewhere"
    (statement,) = policy["Statement"]
    pattern = statement["Condition"]["ArnLike"]["aws:PrincipalArn"]["Fn::Sub"]
    name = role["RoleName"]["Fn::Sub"].replace("${EnvironmentName}", "prod")
    assert pattern.rpartition("/")[2].replace("*", "prod") == name
    assert set(statement["Action"]) == {
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchCheckLayerAvailability",
    }
    others = [
        r
        for n, r in templates["registry"]["Resources"].items()
        if r["Type"] == "AWS::ECR::Repository" and n != "PaymentRepository"
    ]
    assert all("RepositoryPolicyText" not in r["Properties"] for r in others)


def _shares(templates: dict[str, dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for stem, template in templates.items():
        for name, resource in template["Resources"].items():
            if resource["Type"] == "AWS::RAM::ResourceShare":
                yield f"{stem}.{name}", resource


def test_the_payment_subnets_are_shared_with_the_payment_account_alone(
    templates: dict[str, dict[str, Any]],
) -> None:
    shares = dict(_shares(templates))
    assert set(shares) == {
        "network.PaymentSubnetShare",
        "cluster.PaymentGroupShare",
        "cluster.PaymentNamespaceShare",
    }
    subnet_holders = []
    for name, share in shares.items():
        properties = share["Properties"]
        assert properties["Principals"] == [{"Ref": "PaymentAccountId"}], name
        assert properties["AllowExternalPrincipals"] is False, name
        assert share["Condition"] == "PaymentElsewhere", name
        if ":subnet/" in json.dumps(properties["ResourceArns"]):
            subnet_holders.append(name)
    assert subnet_holders == ["network.PaymentSubnetShare"]
    subnets = templates["network"]["Resources"]["PaymentSubnetShare"]["Properties"]
    shared = {arn["Fn::Sub"].rpartition("/")[2] for arn in subnets["ResourceArns"]}
    assert shared == {"${PaymentSubnetA}", "${PaymentSubnetB}", "${PaymentSubnetC}"}

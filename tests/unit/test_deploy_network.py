"""The network's isolation against the code it deploys: the caller graph is what each process
reads (its `*_target` settings, the database and Redis clients it imports), the security groups'
rules are exactly the graph's edges, the payment service's subnets are its own, and every
deployable has its own roles."""

from __future__ import annotations

import ast
import copy
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tools import deployer
from tools.deployer import caller_graph as graph_module
from tools.deployer.caller_graph import (
    ADAPTER_CALLS,
    CARD_DATA,
    STORES,
    VPC_LINK,
    adapter,
    caller_graph,
    carried_security_groups,
    ports,
    security_group,
)

REPO = Path(__file__).resolve().parents[2]
# Top-level packages of this repository an import may lead into.
OUR_PACKAGES = {
    "services",
    "gateway",
    "workers",
    "saga_tasks",
    "marketplace_platform",
    "simulators",
}
# The client libraries that mean "opens connections to this store".
STORE_CLIENTS = {"database": {"sqlalchemy", "asyncpg"}, "redis": {"redis"}}
# Code that runs only when a setting is set that no deployment sets: the operator console's
# package opens a database client only with OPS_DATABASE_URL (local stacks set it; no task
# definition does, test below), so the deployed gateway's graph has no database edge.
OFF_IN_DEPLOYMENTS = {"gateway.ops": "OPS_DATABASE_URL"}
# data.yaml's credentials rotation Lambda: a caller of the database outside the platform's graph.
ROTATION = "RotationSecurityGroup"
Edge = tuple[str, str, int]  # caller, callee, port


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("generated")
    found = {
        p.stem: deployer.load_template(p) for p in sorted(deployer.TEMPLATES_DIR.glob("*.yaml"))
    }
    for name, path in deployer.render_generated(out).items():
        found[name] = json.loads(path.read_text())
    return found


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


# --- the graph against the code -------------------------------------------------------------


def _source(module: str) -> Path | None:
    path = REPO.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(module: str, path: Path) -> Iterator[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_closure(
    *entries: str, leave_out: Iterable[str] = OFF_IN_DEPLOYMENTS
) -> tuple[set[Path], set[str]]:
    """Every source file of ours the entry modules import (transitively), and the third-party
    top-level packages they import: what the process runs, read without running it (but for
    the packages left out, by default those off in deployments)."""
    left_out = tuple(leave_out)
    files: set[Path] = set()
    external: set[str] = set()
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        module = todo.pop()
        if module in seen or any(module == off or module.startswith(f"{off}.") for off in left_out):
            continue
        seen.add(module)
        path = _source(module)
        if path is None:
            continue
        files.add(path)
        if "." in module:
            todo.append(module.rpartition(".")[0])
        for name in _imports(module, path):
            if name.split(".")[0] in OUR_PACKAGES:
                todo.append(name)
            elif name:
                external.add(name.split(".")[0])
    return files, external


def targets_read(files: set[Path]) -> set[str]:
    """The services a process calls: the `<name>_target` fields of the settings it imports."""
    found = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for field in node.body:
                    name = (
                        field.target.id
                        if isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)
                        else ""
                    )
                    if name.endswith("_target"):
                        found.add(name.removesuffix("_target").replace("_", "-"))
    return found


def what_the_code_calls(
    *entries: str, leave_out: Iterable[str] = OFF_IN_DEPLOYMENTS
) -> frozenset[str]:
    files, external = import_closure(*entries, leave_out=leave_out)
    stores = {store for store, clients in STORE_CLIENTS.items() if clients & external}
    return frozenset(targets_read(files) | stores)


def adapter_modules(templates: dict[str, dict[str, Any]]) -> list[str]:
    functions = resources(templates["saga"], "AWS::Lambda::Function").values()
    return sorted({f["Properties"]["Handler"].rpartition(".")[0] for f in functions})


# The adapters' stubs (saga_tasks/clients.py): `clients.<service>()` is a call to that service.
ADAPTER_STUBS = {"inventory", "payment", "checkout"}


def what_an_adapter_calls(module: str) -> frozenset[str]:
    """The services a step module calls: its `clients.<service>()` stubs. Every adapter imports
    every target setting (one AdapterSettings), so the settings cannot tell them apart."""
    path = _source(module)
    assert path is not None, module
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "clients"
            and node.func.attr in ADAPTER_STUBS
        ):
            found.add(node.func.attr)
    return frozenset(found)


def test_the_caller_graph_is_what_each_process_reads(
    templates: dict[str, dict[str, Any]],
) -> None:
    graph = caller_graph()
    for deployable in deployer.present_deployables():
        assert what_the_code_calls(f"{deployable.module}.__main__") == graph[deployable.name], (
            deployable.name
        )
    # The graph's gRPC edges are the targets the tasks are given, so the two cannot part.
    for deployable in deployer.DEPLOYABLES:
        assert set(deployable.calls) == graph[deployable.name] - set(STORES), deployable.name


def test_each_adapter_s_callee_in_the_graph_is_the_service_its_step_calls(
    templates: dict[str, dict[str, Any]],
) -> None:
    graph = caller_graph()
    handlers = adapter_modules(templates)
    assert len(handlers) == len(ADAPTER_CALLS) == 9
    for module in handlers:
        step = module.rpartition(".")[2].replace("_", "-")
        assert what_an_adapter_calls(module) == graph[adapter(step)], module
        # The services it may call are among those its closure reads the targets of.
        assert graph[adapter(step)] <= what_the_code_calls(module), module


def _task_environment(templates: dict[str, dict[str, Any]], name: str) -> set[str]:
    task = templates["services"]["Resources"][f"{deployer.cfn.logical_id(name)}TaskDefinition"]
    (app, *_) = task["Properties"]["ContainerDefinitions"]
    return {e["Name"] for e in app["Environment"]} | {s["Name"] for s in app["Secrets"]}


def test_the_code_reading_sees_targets_and_store_clients() -> None:
    assert what_the_code_calls("gateway.__main__") >= {"cart", "checkout", "redis"}
    assert "database" in what_the_code_calls("services.cart.__main__")
    assert "redis" not in what_the_code_calls("services.payment.__main__")
    # ... because the console's package is left out: read, it opens a database client.
    files, _ = import_closure("gateway.__main__")
    assert not any("ops" in path.parts for path in files)
    assert "database" in what_the_code_calls("gateway.__main__", leave_out=())
    assert what_the_code_calls("saga_tasks.calculate_tax") == {"inventory", "payment", "checkout"}
    assert what_an_adapter_calls("saga_tasks.calculate_tax") == {"checkout"}


def test_no_deployment_sets_what_turns_left_out_code_on(
    templates: dict[str, dict[str, Any]],
) -> None:
    gateway = _task_environment(templates, "gateway")
    assert "CHECKOUT_TARGET" in gateway
    for setting in OFF_IN_DEPLOYMENTS.values():
        assert setting not in gateway, setting
        assert setting not in json.dumps(templates), setting


# --- the graph against the security groups --------------------------------------------------


def _group_names() -> dict[str, str]:
    """Security group logical id in cluster.yaml -> the caller or callee it stands for."""
    names = [
        *(d.name for d in deployer.DEPLOYABLES),
        *(adapter(step) for step in ADAPTER_CALLS),
        VPC_LINK,
        *STORES,
    ]
    return {security_group(name): name for name in names}


def _ref(value: Any) -> str:
    assert isinstance(value, dict), value
    assert set(value) == {"Ref"}, value
    return str(value["Ref"])


def _rules(template: dict[str, Any], kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(the group's logical id, rule) for every standalone and inline rule of a kind."""
    inline = "SecurityGroupIngress" if kind == "ingress" else "SecurityGroupEgress"
    standalone = f"AWS::EC2::{inline}"
    for name, resource in template["Resources"].items():
        if resource["Type"] == standalone:
            yield _ref(resource["Properties"]["GroupId"]), resource["Properties"]
        elif resource["Type"] == "AWS::EC2::SecurityGroup":
            for rule in resource["Properties"].get(inline, []):
                yield name, rule


def cluster_edges(cluster: dict[str, Any]) -> tuple[set[Edge], set[Edge]]:
    """The edges cluster.yaml's ingress rules admit and those its egress rules let out."""
    names = _group_names()
    admitted, allowed = set(), set()
    for group, rule in _rules(cluster, "ingress"):
        assert rule["FromPort"] == rule["ToPort"], group
        assert rule["IpProtocol"] == "tcp", group
        assert "CidrIp" not in rule, f"{group} admits an address range"
        source = names[_ref(rule["SourceSecurityGroupId"])]
        admitted.add((source, names[group], rule["FromPort"]))
    for group, rule in _rules(cluster, "egress"):
        # The interface endpoints (AWS APIs) are outside the graph: the test below holds them.
        if rule.get("DestinationSecurityGroupId") == {"Ref": "EndpointSecurityGroupId"}:
            continue
        if "DestinationSecurityGroupId" in rule:
            allowed.add(
                (names[group], names[_ref(rule["DestinationSecurityGroupId"])], rule["ToPort"])
            )
    return admitted, allowed


def graph_edges() -> set[Edge]:
    port = ports()
    return {
        (caller, callee, port[callee])
        for caller, callees in caller_graph().items()
        for callee in callees
        if callee not in STORES
    }


def test_the_security_groups_admit_exactly_the_caller_graph(
    templates: dict[str, dict[str, Any]],
) -> None:
    admitted, allowed = cluster_edges(templates["cluster"])

    assert admitted == graph_edges()
    assert allowed == graph_edges()
    assert ("gateway", "payment", 50053) not in admitted  # the edge sees no card data
    assert ("vpc-link", "gateway", 8080) in admitted


def test_a_missing_or_extra_rule_is_seen(templates: dict[str, dict[str, Any]]) -> None:
    cluster = copy.deepcopy(templates["cluster"])
    del cluster["Resources"]["PaymentFromCheckout"]
    cluster["Resources"]["PaymentFromGateway"] = copy.deepcopy(
        cluster["Resources"]["CartFromGateway"]
    )
    cluster["Resources"]["PaymentFromGateway"]["Properties"] |= {
        "GroupId": {"Ref": "PaymentSecurityGroup"},
        "FromPort": 50053,
        "ToPort": 50053,
    }

    admitted, _ = cluster_edges(cluster)

    assert graph_edges() - admitted == {("checkout", "payment", 50053)}
    assert admitted - graph_edges() == {("gateway", "payment", 50053)}


def _root_value(templates: dict[str, dict[str, Any]], stack: str, parameter: str) -> Any:
    stacks = resources(templates["root"], "AWS::CloudFormation::Stack")
    return stacks[stack]["Properties"]["Parameters"][parameter]


def _cluster_group(templates: dict[str, dict[str, Any]], stack: str, parameter: str) -> str:
    """The cluster.yaml security group a nested stack's parameter is given by the root stack."""
    value = _root_value(templates, stack, parameter)
    cluster, output = value["Fn::GetAtt"]
    assert cluster == "Cluster", (stack, parameter)
    return _ref(templates["cluster"]["Outputs"][output.removeprefix("Outputs.")]["Value"])


def test_each_deployable_carries_its_own_group_and_its_stores_clients_groups(
    templates: dict[str, dict[str, Any]],
) -> None:
    services = resources(templates["services"], "AWS::ECS::Service")
    carried = {}
    for service in services.values():
        network = service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]
        groups = [_cluster_group(templates, "Services", _ref(g)) for g in network["SecurityGroups"]]
        carried[service["Properties"]["ServiceName"]] = groups
    long_running = {d.name for d in deployer.present_deployables() if d.long_running}

    assert set(carried) == long_running
    for name, groups in carried.items():
        assert groups == carried_security_groups(name), name
    assert len({groups[0] for groups in carried.values()}) == len(carried)  # no group shared
    # Who carries a store's clients group is who the graph says connects to it.
    graph = caller_graph()
    for store in STORES:
        users = {name for name, groups in carried.items() if security_group(store) in groups}
        assert users == {n for n in long_running if store in graph[n]}, store


@pytest.mark.parametrize(
    ("stack", "group", "store"),
    [("Data", "DatabaseSecurityGroup", "database"), ("Cache", "SecurityGroup", "redis")],
)
def test_each_data_store_admits_only_its_clients_group(
    templates: dict[str, dict[str, Any]], stack: str, group: str, store: str
) -> None:
    template = templates[stack.lower()]
    sources = set()
    for rule_group, rule in _rules(template, "ingress"):
        if rule_group == group:
            assert rule["FromPort"] == rule["ToPort"] == STORES[store]
            source = _ref(rule["SourceSecurityGroupId"])
            if source in template["Parameters"]:
                source = _cluster_group(templates, stack, source)
            sources.add(source)

    assert sources - {ROTATION} == {security_group(store)}


def test_nothing_is_admitted_from_anywhere(templates: dict[str, dict[str, Any]]) -> None:
    for stem, template in templates.items():
        for group, rule in _rules(template, "ingress"):
            assert rule.get("CidrIp") != "0.0.0.0/0", f"{stem}.{group}"
            assert "CidrIpv6" not in rule, f"{stem}.{group}"


# --- the payment service's own subnets ------------------------------------------------------


def test_the_payment_subnets_are_used_by_the_payment_service_only(
    templates: dict[str, dict[str, Any]],
) -> None:
    network = templates["network"]
    payment_subnets = {n for n in resources(network, "AWS::EC2::Subnet") if n.startswith("Payment")}
    assert len(payment_subnets) == 3
    # Inside network.yaml: their own route tables, the output, the RAM share, nothing else.
    for name, resource in network["Resources"].items():
        text = json.dumps(resource)
        if any(f'"{s}"' in text or "${" + s + "}" in text for s in payment_subnets):
            assert name.startswith("PaymentSubnet"), name
    # Across the stacks: only the services stack receives them, only payment's tasks use them.
    for stem, template in templates.items():
        text = json.dumps(template)
        if stem == "root":
            stacks = resources(template, "AWS::CloudFormation::Stack")
            receivers = {name for name, s in stacks.items() if "PaymentSubnetIds" in json.dumps(s)}
            assert receivers == {"Services"}
        elif stem not in {"network", "services", "payment-account"}:
            assert "PaymentSubnet" not in text, stem
    # The services stack here, or the payment account's stack there: card data only.
    for stem in ("services", "payment-account"):
        using = {
            service["Properties"]["ServiceName"]
            for service in resources(templates[stem], "AWS::ECS::Service").values()
            if service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"]
            == {"Ref": "PaymentSubnetIds"}
        }
        assert using == set(CARD_DATA), stem
    services = resources(templates["payment-account"], "AWS::ECS::Service").values()
    assert {s["Properties"]["ServiceName"] for s in services} == set(CARD_DATA)


def test_no_two_subnets_share_an_address_block(templates: dict[str, dict[str, Any]]) -> None:
    subnets = resources(templates["network"], "AWS::EC2::Subnet")
    blocks = [s["Properties"]["CidrBlock"]["Fn::Select"] for s in subnets.values()]
    indexes = [index for index, _ in blocks]
    splits = {json.dumps(split) for _, split in blocks}

    assert len(splits) == 1  # one split of the VPC's range, so equal indexes mean equal blocks
    assert sorted(indexes) == list(range(len(subnets)))


# --- identity ---------------------------------------------------------------------------------


def test_every_deployable_has_its_own_task_and_execution_roles(
    templates: dict[str, dict[str, Any]],
) -> None:
    services = templates["services"]
    tasks = resources(services, "AWS::ECS::TaskDefinition")
    task_roles = [t["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0] for t in tasks.values()]
    execution_roles = [t["Properties"]["ExecutionRoleArn"]["Fn::GetAtt"][0] for t in tasks.values()]

    assert len(tasks) == len(deployer.present_deployables())
    assert len(set(task_roles)) == len(tasks)
    assert len(set(execution_roles)) == len(tasks)
    assert not set(task_roles) & set(execution_roles)
    for role in (*task_roles, *execution_roles):
        assert services["Resources"][role]["Type"] == "AWS::IAM::Role"


def test_the_graph_names_a_group_for_every_caller() -> None:
    groups = _group_names()
    assert set(caller_graph()) <= set(groups.values())
    assert set(graph_module.STORE_USERS) == set(STORES)


# --- the payment service in another account ---------------------------------------------------


def _shared_arns(share: dict[str, Any]) -> set[str]:
    arns = set()
    for arn in share["Properties"]["ResourceArns"]:
        arns.add(arn["Fn::Sub"].rpartition("/")[2].strip("${}"))
    return arns


def test_another_payment_account_gets_the_payment_subnets_and_groups_only(
    templates: dict[str, dict[str, Any]],
) -> None:
    network, cluster = templates["network"], templates["cluster"]
    subnet_share = network["Resources"]["PaymentSubnetShare"]
    group_share = cluster["Resources"]["PaymentGroupShare"]

    for template, share in ((network, subnet_share), (cluster, group_share)):
        assert share["Condition"] == "PaymentElsewhere"
        assert template["Conditions"]["PaymentElsewhere"] == {
            "Fn::Not": [{"Fn::Equals": [{"Ref": "PaymentAccountId"}, ""]}]
        }
        assert template["Parameters"]["PaymentAccountId"]["Default"] == ""
        assert share["Properties"]["Principals"] == [{"Ref": "PaymentAccountId"}]
        assert share["Properties"]["AllowExternalPrincipals"] is False
    assert _shared_arns(subnet_share) == {"PaymentSubnetA", "PaymentSubnetB", "PaymentSubnetC"}
    # What payment's tasks carry here, they carry there: the graph's rules apply unchanged.
    assert _shared_arns(group_share) == set(carried_security_groups("payment"))


def test_the_root_stack_passes_its_payment_account_to_the_network_and_the_cluster(
    templates: dict[str, dict[str, Any]],
) -> None:
    root = templates["root"]

    assert root["Parameters"]["PaymentAccountId"]["Default"] == ""
    for stack in ("Network", "Cluster", "Data", "Cache", "Services"):
        assert _root_value(templates, stack, "PaymentAccountId") == {"Ref": "PaymentAccountId"}


def test_the_payment_subnets_admit_only_payments_port_and_answers(
    templates: dict[str, dict[str, Any]],
) -> None:
    network = templates["network"]
    associations = resources(network, "AWS::EC2::SubnetNetworkAclAssociation").values()
    by_subnet = {
        _ref(a["Properties"]["SubnetId"]): _ref(a["Properties"]["NetworkAclId"])
        for a in associations
    }
    entries = [
        e["Properties"]
        for e in resources(network, "AWS::EC2::NetworkAclEntry").values()
        if _ref(e["Properties"]["NetworkAclId"]) == "PaymentNetworkAcl"
    ]
    inbound = {
        (e["PortRange"]["From"], e["PortRange"]["To"], json.dumps(e["CidrBlock"]))
        for e in entries
        if not e.get("Egress", False)
    }

    assert by_subnet == dict.fromkeys(
        ["PaymentSubnetA", "PaymentSubnetB", "PaymentSubnetC"], "PaymentNetworkAcl"
    )
    assert all(e["RuleAction"] == "allow" and e["Protocol"] == 6 for e in entries)
    assert inbound == {
        (ports()["payment"], ports()["payment"], json.dumps({"Ref": "VpcCidr"})),
        (32768, 65535, json.dumps("0.0.0.0/0")),  # answers to payment's own connections
    }


# --- egress to AWS APIs and beyond ------------------------------------------------------------

# The groups that may leave on 443 to anywhere (through NAT), for what no endpoint serves.
TO_THE_INTERNET = {
    ("cluster", "PaymentSecurityGroup"): "the PSP",
    ("cluster", "EmailConsumerSecurityGroup"): "SES's sending API",
    ("cluster", "GatewaySecurityGroup"): "the user pool's JWKS",
}


def test_only_what_no_endpoint_serves_leaves_for_anywhere(
    templates: dict[str, dict[str, Any]],
) -> None:
    open_egress = set()
    for stem, template in templates.items():
        for group, rule in _rules(template, "egress"):
            if rule.get("CidrIp") in ("0.0.0.0/0",) or rule.get("CidrIpv6") == "::/0":
                assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 443, 443)
                open_egress.add((stem, group))
    assert open_egress == set(TO_THE_INTERNET)


def test_every_task_reaches_aws_apis_through_the_endpoints_and_s3_s_prefix_list(
    templates: dict[str, dict[str, Any]],
) -> None:
    cluster = templates["cluster"]
    for deployable in deployer.DEPLOYABLES:
        rules = [
            rule
            for group, rule in _rules(cluster, "egress")
            if group == security_group(deployable.name)
        ]
        to_endpoints = [r for r in rules if r.get("DestinationSecurityGroupId")]
        assert {"Ref": "EndpointSecurityGroupId"} in [
            r["DestinationSecurityGroupId"] for r in to_endpoints
        ], deployable.name
        assert [
            r.get("DestinationPrefixListId") for r in rules if "DestinationPrefixListId" in r
        ] == [{"Ref": "S3PrefixListId"}], deployable.name
    cluster_parameters = _root_value(templates, "Cluster", "EndpointSecurityGroupId")
    assert cluster_parameters == {"Fn::GetAtt": ["Network", "Outputs.EndpointSecurityGroupId"]}
    assert _root_value(templates, "Cluster", "S3PrefixListId") == {"Ref": "S3PrefixListId"}
    network = templates["network"]["Resources"]
    assert (
        network["EndpointSecurityGroup"]["Properties"]["SecurityGroupIngress"][0]["FromPort"] == 443
    )
    # The prefix list is S3's, served by the gateway endpoint on every task subnet's routes.
    s3 = network["S3Endpoint"]["Properties"]
    assert s3["ServiceName"] == {"Fn::Sub": "com.amazonaws.${AWS::Region}.s3"}
    assert s3["VpcEndpointType"] == "Gateway"
    assert {r["Ref"] for r in s3["RouteTableIds"]} >= {
        f"{kind}RouteTable{zone}" for kind in ("App", "Payment") for zone in "ABC"
    }
    root = templates["root"]["Parameters"]["S3PrefixListId"]
    assert "com.amazonaws.<region>.s3" in root["Description"]

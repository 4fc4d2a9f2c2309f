"""The CloudFormation templates against the repository they deploy: the same saga definition,
the same routing rules, a task definition for every deployable, DLQs, encryption, IAM."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local_supervisor.stack import STACK
from saga_tasks.registry import HANDLERS
from tools import deployer
from tools.deployer.caller_graph import adapter, security_group

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every template by file stem: the hand-written ones and those the tool generates."""
    out = tmp_path_factory.mktemp("generated")
    found = {
        path.stem: deployer.load_template(path)
        for path in sorted(deployer.TEMPLATES_DIR.glob("*.yaml"))
    }
    for name, path in deployer.render_generated(out).items():
        found[name] = json.loads(path.read_text())
    return found


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def all_resources(
    templates: dict[str, dict[str, Any]],
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for stem, template in templates.items():
        for name, resource in template["Resources"].items():
            yield stem, name, resource


def asl_tasks(states: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in states.items():
        if state["Type"] == "Task":
            yield name, state
        for branch in state.get("Branches", []):
            yield from asl_tasks(branch["States"])


# --- the state machine ----------------------------------------------------------------------


def test_the_state_machine_deployed_is_the_local_asl_file_byte_for_byte(tmp_path: Path) -> None:
    build = deployer.stage(tmp_path, lambda_dependencies=False)
    parameters = deployer.root_parameters(build, env="prod", region="eu-west-1")
    key = parameters["SagaDefinitionKey"]

    staged = tmp_path / key  # the build directory is <out>/<build id>, the key <build id>/<file>
    assert staged.read_bytes() == deployer.SAGA_DEFINITION.read_bytes()
    assert key.startswith(build.build_id + "/")

    saga = deployer.load_template(deployer.TEMPLATES_DIR / "saga.yaml")
    (machine,) = resources(saga, "AWS::StepFunctions::StateMachine").values()
    properties = machine["Properties"]
    assert "Definition" not in properties
    assert "DefinitionString" not in properties
    assert properties["StateMachineType"] == "STANDARD"
    assert properties["DefinitionS3Location"] == {
        "Bucket": {"Ref": "ArtifactBucket"},
        "Key": {"Ref": "SagaDefinitionKey"},
    }
    root = deployer.load_template(deployer.TEMPLATES_DIR / "root.yaml")
    passed = root["Resources"]["Saga"]["Properties"]["Parameters"]
    assert passed["SagaDefinitionKey"] == {"Ref": "SagaDefinitionKey"}
    assert passed["ArtifactBucket"] == {"Ref": "ArtifactBucket"}


def test_the_same_sources_stage_to_the_same_build_id_and_keys(tmp_path: Path) -> None:
    first = deployer.stage(tmp_path / "a", lambda_dependencies=False)
    again = deployer.stage(tmp_path / "b", lambda_dependencies=False)

    assert first.build_id == again.build_id
    assert first.keys == again.keys
    assert (first.directory / "saga-adapters.zip").read_bytes() == (
        again.directory / "saga-adapters.zip"
    ).read_bytes()


def test_a_changed_definition_is_staged_as_changed_under_a_new_key(tmp_path: Path) -> None:
    # The repository as it is, but for one edited state machine file.
    repo = tmp_path / "repo"
    for top in (
        "workers",
        "marketplace_platform",
        "gen",
        "services",
        "gateway",
        "simulators",
        "saga_tasks",
    ):
        (repo / top).parent.mkdir(parents=True, exist_ok=True)
        (repo / top).symlink_to(REPO / top)
    ecs = repo / "deploy" / "ecs"
    ecs.mkdir(parents=True)
    for name in ("templates", "event_rules.json", "lambda"):
        (ecs / name).symlink_to(REPO / "deploy" / "ecs" / name)
    definition = json.loads(deployer.SAGA_DEFINITION.read_text())
    definition["Comment"] += " Edited."
    edited = json.dumps(definition, indent=2).encode()
    (ecs / "checkout_saga.asl.json").write_bytes(edited)

    original = deployer.stage(tmp_path / "original", lambda_dependencies=False)
    changed = deployer.stage(tmp_path / "changed", repo=repo, lambda_dependencies=False)

    key = changed.keys["checkout_saga.asl.json"]
    assert key != original.keys["checkout_saga.asl.json"]
    assert (tmp_path / "changed" / key).read_bytes() == edited


def test_every_template_is_cfn_lint_clean(tmp_path: Path) -> None:
    generated = deployer.render_generated(tmp_path)
    paths = [*sorted(deployer.TEMPLATES_DIR.glob("*.yaml")), *generated.values()]
    cfn_lint = Path(sys.executable).parent / "cfn-lint"

    result = subprocess.run(
        [str(cfn_lint), *map(str, paths)], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert len(paths) == 13  # edge-global.yaml (us-east-1) and payment-account.json among them


def test_every_placeholder_is_substituted_by_the_lambda_running_its_handler() -> None:
    definition = json.loads(deployer.SAGA_DEFINITION.read_text())
    tasks = dict(asl_tasks(definition["States"]))
    placeholders = {state["Resource"][2:-1]: state for state in tasks.values()}
    saga = deployer.load_template(deployer.TEMPLATES_DIR / "saga.yaml")
    (machine,) = resources(saga, "AWS::StepFunctions::StateMachine").values()
    substitutions = machine["Properties"]["DefinitionSubstitutions"]
    functions = resources(saga, "AWS::Lambda::Function")

    assert set(substitutions) == set(placeholders) == set(HANDLERS)
    assert len(functions) == len(HANDLERS)
    for name, value in substitutions.items():
        function_id, attribute = value["Fn::GetAtt"]
        assert attribute == "Arn"
        function = functions[function_id]["Properties"]
        assert function["Handler"] == f"{HANDLERS[name].__module__}.handler", name
        # The function ends by itself within the Task's own timeout.
        assert function["Timeout"] <= placeholders[name]["TimeoutSeconds"], name
        # Each adapter in its own group (cluster.yaml), the one for its step's caller name.
        step = HANDLERS[name].__module__.rpartition(".")[2].replace("_", "-")
        group = security_group(adapter(step))
        assert function["VpcConfig"]["SecurityGroupIds"] == [{"Ref": f"{group}Id"}]
        assert function["Code"]["S3Key"] == {"Ref": "AdapterCodeKey"}


def test_the_state_machine_may_invoke_only_its_adapters() -> None:
    saga = deployer.load_template(deployer.TEMPLATES_DIR / "saga.yaml")
    role = saga["Resources"]["StateMachineRole"]["Properties"]
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    (invoke,) = [s for s in statements if "lambda:InvokeFunction" in str(s["Action"])]

    invoked = {arn["Fn::GetAtt"][0] for arn in invoke["Resource"]}
    assert invoked == set(resources(saga, "AWS::Lambda::Function"))


# --- events and queues ------------------------------------------------------------------------


def test_the_eventbridge_rules_are_the_local_rules_file(
    templates: dict[str, dict[str, Any]],
) -> None:
    rules_file = json.loads((REPO / "deploy/ecs/event_rules.json").read_text())
    events = templates["events"]
    queue_names = {
        name: r["Properties"]["QueueName"]
        for name, r in resources(events, "AWS::SQS::Queue").items()
    }
    deployed = {}
    for rule in resources(events, "AWS::Events::Rule").values():
        properties = rule["Properties"]
        assert properties["EventBusName"] == {"Ref": "EventBus"}
        assert properties["State"] == "ENABLED"
        targets = sorted(queue_names[t["Arn"]["Fn::GetAtt"][0]] for t in properties["Targets"])
        deployed[properties["Name"]] = (properties["EventPattern"], targets)

    expected = {r["name"]: (r["event_pattern"], sorted(r["targets"])) for r in rules_file["rules"]}
    assert deployed == expected
    (bus,) = resources(events, "AWS::Events::EventBus").values()
    assert bus["Properties"]["Name"] == rules_file["event_bus_name"]


def test_every_queue_has_a_dlq_with_the_declared_redrive(
    templates: dict[str, dict[str, Any]],
) -> None:
    rules_file = json.loads((REPO / "deploy/ecs/event_rules.json").read_text())
    events = templates["events"]
    queues = resources(events, "AWS::SQS::Queue")
    by_name = {r["Properties"]["QueueName"]: (name, r["Properties"]) for name, r in queues.items()}
    dead_letter_names = {q["dead_letter_queue"] for q in rules_file["queues"]}
    alarms = [r["Properties"] for r in resources(events, "AWS::CloudWatch::Alarm").values()]

    assert set(by_name) == {q["name"] for q in rules_file["queues"]} | dead_letter_names
    for declared in rules_file["queues"]:
        _, properties = by_name[declared["name"]]
        dlq_id, _ = by_name[declared["dead_letter_queue"]]
        assert properties["RedrivePolicy"] == {
            "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
            "maxReceiveCount": declared["max_receive_count"],
        }
        assert properties["VisibilityTimeout"] == declared["visibility_timeout_seconds"]
        watched = {(a["MetricName"], a["Dimensions"][0]["Value"]["Fn::GetAtt"][0]) for a in alarms}
        assert ("ApproximateNumberOfMessagesVisible", dlq_id) in watched
        assert ("ApproximateAgeOfOldestMessage", by_name[declared["name"]][0]) in watched
    # Every queue that is not itself a DLQ has a redrive policy.
    for name, (_, properties) in by_name.items():
        assert ("RedrivePolicy" in properties) != (name in dead_letter_names), name


def test_only_the_rules_that_target_a_queue_may_send_to_it(
    templates: dict[str, dict[str, Any]],
) -> None:
    events = templates["events"]
    for policy in resources(events, "AWS::SQS::QueuePolicy").values():
        (queue_ref,) = policy["Properties"]["Queues"]
        (allow,) = [
            s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"
        ]
        senders = {arn["Fn::GetAtt"][0] for arn in allow["Condition"]["ArnEquals"]["aws:SourceArn"]}
        targeting = {
            name
            for name, rule in resources(events, "AWS::Events::Rule").items()
            if any(
                t["Arn"]["Fn::GetAtt"][0] == queue_ref["Ref"] for t in rule["Properties"]["Targets"]
            )
        }
        assert senders == targeting


# --- deployables and task definitions ---------------------------------------------------------


def deployables_in_repo() -> set[str]:
    """What runs as a process: the local stack's modules and every runnable package, minus the
    processes that only run locally."""
    modules: set[str] = deployer.runnable_modules() | {entry.module for entry in STACK}
    return modules - set(deployer.LOCAL_ONLY)


def task_definition_modules(services: dict[str, Any]) -> dict[str, str]:
    found = {}
    for name, task in resources(services, "AWS::ECS::TaskDefinition").items():
        (app,) = [c for c in task["Properties"]["ContainerDefinitions"] if c["Name"] == "app"]
        assert app["Command"][:2] == ["python", "-m"]
        found[app["Command"][2]] = name
    return found


def test_every_deployable_has_a_task_definition_and_every_task_definition_a_deployable(
    templates: dict[str, dict[str, Any]],
) -> None:
    deployed = task_definition_modules(templates["services"])

    assert set(deployed) == deployables_in_repo()
    assert {"services.cart", "services.checkout", "gateway"} <= set(deployed)


def test_the_local_only_processes_are_real_and_not_deployed(
    templates: dict[str, dict[str, Any]],
) -> None:
    deployed = task_definition_modules(templates["services"])

    for module in deployer.LOCAL_ONLY:
        assert deployer.module_exists(module), module
        assert module not in deployed


def test_a_new_worker_is_found_in_the_repo(tmp_path: Path) -> None:
    (tmp_path / "workers" / "refund_sweeper").mkdir(parents=True)
    (tmp_path / "workers" / "refund_sweeper" / "__main__.py").write_text("")
    (tmp_path / "workers" / "consumers" / "returns").mkdir(parents=True)
    (tmp_path / "workers" / "consumers" / "returns" / "__main__.py").write_text("")

    assert deployer.runnable_modules(tmp_path) == {
        "workers.refund_sweeper",
        "workers.consumers.returns",
    }


def test_every_service_is_a_fargate_service_with_service_connect_and_autoscaling(
    templates: dict[str, dict[str, Any]],
) -> None:
    services = templates["services"]
    for name, service in resources(services, "AWS::ECS::Service").items():
        properties = service["Properties"]
        assert properties["ServiceConnectConfiguration"]["Enabled"] is True, name
        assert properties["DeploymentConfiguration"]["DeploymentCircuitBreaker"]["Rollback"] is True
        targets = [
            t
            for t in resources(services, "AWS::ApplicationAutoScaling::ScalableTarget").values()
            if f"{name}.Name" in t["Properties"]["ResourceId"]["Fn::Sub"]
        ]
        assert len(targets) == 1, name
    for task in resources(services, "AWS::ECS::TaskDefinition").values():
        containers = {c["Name"]: c for c in task["Properties"]["ContainerDefinitions"]}
        assert containers["otel-collector"]["Image"].startswith("public.ecr.aws/aws-observability/")
        assert task["Properties"]["RequiresCompatibilities"] == ["FARGATE"]


def test_only_non_critical_workers_run_on_fargate_spot(
    templates: dict[str, dict[str, Any]],
) -> None:
    on_spot = {
        service["Properties"]["ServiceName"]
        for service in resources(templates["services"], "AWS::ECS::Service").values()
        if any(
            s["CapacityProvider"] == "FARGATE_SPOT"
            for s in service["Properties"]["CapacityProviderStrategy"]
        )
    }
    expected = {d.name for d in deployer.present_deployables() if not d.critical}

    assert on_spot == expected
    assert not on_spot & {"cart", "inventory", "payment", "checkout", "gateway", "outbox-relay"}


def test_every_target_a_process_calls_is_a_service_connect_alias(
    templates: dict[str, dict[str, Any]],
) -> None:
    services = templates["services"]
    aliases = {
        f"{alias['DnsName']}:{alias['Port']}"
        for service in resources(services, "AWS::ECS::Service").values()
        for sc in service["Properties"]["ServiceConnectConfiguration"].get("Services", [])
        for alias in sc["ClientAliases"]
    }
    for task in resources(services, "AWS::ECS::TaskDefinition").values():
        (app,) = [c for c in task["Properties"]["ContainerDefinitions"] if c["Name"] == "app"]
        for variable in app["Environment"]:
            if variable["Name"].endswith("_TARGET"):
                assert variable["Value"] in aliases, variable


def test_each_process_reads_only_the_secrets_its_execution_role_may_read(
    templates: dict[str, dict[str, Any]],
) -> None:
    services = templates["services"]
    for name, task in resources(services, "AWS::ECS::TaskDefinition").items():
        role_id = task["Properties"]["ExecutionRoleArn"]["Fn::GetAtt"][0]
        statements = services["Resources"][role_id]["Properties"]["Policies"][0]["PolicyDocument"][
            "Statement"
        ]
        (read,) = [s for s in statements if s["Action"] == ["secretsmanager:GetSecretValue"]]
        readable = {ref["Ref"] for ref in read["Resource"]}
        (app,) = [c for c in task["Properties"]["ContainerDefinitions"] if c["Name"] == "app"]
        used = set()
        for secret in app["Secrets"]:
            value = secret["ValueFrom"]
            used.add(value["Ref"] if "Ref" in value else value["Fn::Sub"].split("}")[0][2:])
        assert used == readable, name
        assert "DB_PASSWORD" not in {v["Name"] for v in app["Environment"]}


def test_only_checkout_starts_sagas_and_only_the_relay_publishes_events(
    templates: dict[str, dict[str, Any]],
) -> None:
    services = templates["services"]
    actions_by_service: dict[str, set[str]] = {}
    for name, role in resources(services, "AWS::IAM::Role").items():
        if not name.endswith("TaskRole"):
            continue
        statements = role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        actions_by_service[name.removesuffix("TaskRole")] = {
            a for s in statements for a in s["Action"]
        }

    starters = {
        name for name, actions in actions_by_service.items() if "states:StartExecution" in actions
    }
    publishers = {
        name for name, actions in actions_by_service.items() if "events:PutEvents" in actions
    }
    assert starters == {"Checkout"}
    assert publishers == {"OutboxRelay"}
    # The gateway's task role: telemetry, and re-reading its rotated secrets (JWT key, Redis token).
    assert {
        a
        for a in actions_by_service["Gateway"]
        if not a.startswith(("xray:", "logs:", "cloudwatch:"))
    } <= {"secretsmanager:GetSecretValue", "kms:Decrypt"}


def test_a_task_role_reads_only_its_own_rotated_secrets_and_only_through_secrets_manager(
    templates: dict[str, dict[str, Any]],
) -> None:
    services = templates["services"]
    readers = {}
    for name, role in resources(services, "AWS::IAM::Role").items():
        if not name.endswith("TaskRole"):
            continue
        for statement in role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]:
            if "secretsmanager:GetSecretValue" in statement["Action"]:
                readers[name.removesuffix("TaskRole")] = {r["Ref"] for r in statement["Resource"]}
            if "kms:Decrypt" in statement["Action"] and statement["Resource"] == {
                "Ref": "SecretsKeyArn"
            }:
                condition = statement["Condition"]["StringEquals"]["kms:ViaService"]
                assert condition == {"Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"}

    assert readers == {
        "Gateway": {"JwtSecretArn", "RedisSecretArn"},
        "Cart": {"RedisSecretArn"},
        "Payment": {"PspSecretArn"},
    }
    tasks = resources(services, "AWS::ECS::TaskDefinition")
    for name, secrets in readers.items():
        app = tasks[f"{name}TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
        named = {e["Value"]["Ref"] for e in app["Environment"] if e["Name"].endswith("_SECRET_ARN")}
        assert named == secrets, name


# --- encryption and IAM -----------------------------------------------------------------------

# Every kind of resource that holds data, and how it says it is encrypted.
ENCRYPTED: dict[str, Any] = {
    "AWS::RDS::DBCluster": lambda p: p.get("StorageEncrypted") is True and "KmsKeyId" in p,
    "AWS::ElastiCache::ReplicationGroup": lambda p: (
        p.get("AtRestEncryptionEnabled") is True
        and p.get("TransitEncryptionEnabled") is True
        and "KmsKeyId" in p
    ),
    "AWS::S3::Bucket": lambda p: bool(
        p["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
            "ServerSideEncryptionByDefault"
        ]
    ),
    "AWS::SQS::Queue": lambda p: "KmsMasterKeyId" in p,
    "AWS::SecretsManager::Secret": lambda p: "KmsKeyId" in p,
    "AWS::SNS::Topic": lambda p: "KmsMasterKeyId" in p,
    "AWS::ECR::Repository": lambda p: p["EncryptionConfiguration"]["EncryptionType"] == "KMS",
    "AWS::RDS::GlobalCluster": lambda p: "SourceDBClusterIdentifier" in p,  # inherits the source's
}
DATA_STORE_TYPES = set(ENCRYPTED) | {
    "AWS::DynamoDB::Table",
    "AWS::EFS::FileSystem",
    "AWS::RDS::DBInstance",
}


def test_every_data_store_is_encrypted(templates: dict[str, dict[str, Any]]) -> None:
    seen = set()
    for stem, name, resource in all_resources(templates):
        kind = resource["Type"]
        if kind not in DATA_STORE_TYPES:
            continue
        seen.add(kind)
        if kind == "AWS::RDS::DBInstance":
            # Aurora instances store nothing of their own: the cluster's storage is encrypted.
            assert "DBClusterIdentifier" in resource["Properties"], name
            continue
        assert kind in ENCRYPTED, f"{stem}.{name}: a data store with no encryption rule"
        assert ENCRYPTED[kind](resource["Properties"]), f"{stem}.{name} is not encrypted"
    assert {
        "AWS::RDS::DBCluster",
        "AWS::ElastiCache::ReplicationGroup",
        "AWS::S3::Bucket",
        "AWS::SQS::Queue",
    } <= seen


def test_documents_buckets_are_versioned_and_private(templates: dict[str, dict[str, Any]]) -> None:
    buckets = resources(templates["storage"], "AWS::S3::Bucket")

    assert {"InvoiceBucket", "ExportBucket"} <= set(buckets)
    for bucket in (buckets["InvoiceBucket"], buckets["ExportBucket"]):
        properties = bucket["Properties"]
        assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
        assert set(properties["PublicAccessBlockConfiguration"].values()) == {True}
        assert (
            properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
                "ServerSideEncryptionByDefault"
            ]["SSEAlgorithm"]
            == "aws:kms"
        )


def policy_documents(templates: dict[str, dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every identity-based IAM policy document in every template."""
    for stem, name, resource in all_resources(templates):
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role":
            for policy in properties.get("Policies", []):
                yield f"{stem}.{name}.{policy['PolicyName']}", policy["PolicyDocument"]
        elif resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            yield f"{stem}.{name}", properties["PolicyDocument"]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def grants_everything(statement: dict[str, Any]) -> bool:
    """An Allow of every action (or every action of a service, or NotAction) on every resource."""
    if statement["Effect"] != "Allow":
        return False
    actions = as_list(statement.get("Action", []))
    any_action = "NotAction" in statement or any(a == "*" or str(a).endswith(":*") for a in actions)
    any_resource = "NotResource" in statement or "*" in as_list(statement.get("Resource", []))
    return any_action and any_resource


def test_the_wildcard_check_catches_what_it_should() -> None:
    assert grants_everything({"Effect": "Allow", "Action": "*", "Resource": "*"})
    assert grants_everything({"Effect": "Allow", "Action": ["sqs:*"], "Resource": ["*"]})
    assert grants_everything({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})
    assert not grants_everything(
        {"Effect": "Allow", "Action": ["xray:PutTraceSegments"], "Resource": "*"}
    )
    assert not grants_everything({"Effect": "Deny", "Action": "*", "Resource": "*"})


def test_no_iam_policy_grants_every_action_on_every_resource(
    templates: dict[str, dict[str, Any]],
) -> None:
    documents = list(policy_documents(templates))

    assert len(documents) > 20  # the task roles, execution roles, adapters, state machine, ...
    for where, document in documents:
        for statement in as_list(document["Statement"]):
            assert not grants_everything(statement), where


def _statements(document: Any) -> Iterator[dict[str, Any]]:
    """A policy's statements, both branches of an Fn::If (document or statement) included."""
    if isinstance(document, dict) and "Fn::If" in document:
        for branch in document["Fn::If"][1:]:
            yield from _statements(branch)
    elif isinstance(document, dict) and "Statement" in document:
        for statement in as_list(document["Statement"]):
            yield from _statements(statement)
    elif isinstance(document, dict) and "Effect" in document:
        yield document


def test_no_resource_policy_allows_anyone(templates: dict[str, dict[str, Any]]) -> None:
    kinds = ("KeyPolicy", "PolicyDocument", "ResourcePolicy", "RepositoryPolicyText")
    seen = 0
    for stem, name, resource in all_resources(templates):
        properties = resource.get("Properties", {})
        for kind in kinds:
            for statement in _statements(properties.get(kind)):
                seen += 1
                if statement["Effect"] == "Allow":
                    assert statement.get("Principal") != "*", f"{stem}.{name}"
                    assert statement.get("Principal") != {"AWS": "*"}, f"{stem}.{name}"
    assert seen > 30


# --- stacks and parameters ---------------------------------------------------------------------


def test_nested_stacks_pass_exactly_what_their_templates_declare(
    templates: dict[str, dict[str, Any]],
) -> None:
    root = templates["root"]
    stacks = resources(root, "AWS::CloudFormation::Stack")

    assert len(stacks) == 9
    for name, stack in stacks.items():
        url = stack["Properties"]["TemplateURL"]["Fn::Sub"]
        child = templates[Path(url).stem]
        declared = child.get("Parameters", {})
        passed = stack["Properties"].get("Parameters", {})
        assert set(passed) <= set(declared), name
        required = {p for p, spec in declared.items() if "Default" not in spec}
        assert required <= set(passed), name
    # Every output a stack reads from another is one that stack declares.
    text = json.dumps(root)
    for name, stack in stacks.items():
        child = templates[Path(stack["Properties"]["TemplateURL"]["Fn::Sub"]).stem]
        for output in child.get("Outputs", {}):
            text = text.replace(f'"{name}.Outputs.{output}"', '"ok"')
    assert ".Outputs." not in text


def test_every_task_and_lambda_runs_as_the_root_stacks_region_epoch(
    templates: dict[str, dict[str, Any]],
) -> None:
    root = resources(templates["root"], "AWS::CloudFormation::Stack")
    for stack in ("Services", "Saga"):
        assert root[stack]["Properties"]["Parameters"]["RegionEpoch"] == {"Ref": "RegionEpoch"}
    tasks = resources(templates["services"], "AWS::ECS::TaskDefinition")
    functions = resources(templates["saga"], "AWS::Lambda::Function")

    assert tasks
    for name, task in tasks.items():
        (app,) = [c for c in task["Properties"]["ContainerDefinitions"] if c["Name"] == "app"]
        env = {pair["Name"]: pair["Value"] for pair in app["Environment"]}
        assert env["REGION_EPOCH"] == {"Ref": "RegionEpoch"}, name
    assert len(functions) == len(HANDLERS)
    for name, function in functions.items():
        variables = function["Properties"]["Environment"]["Variables"]
        assert variables["REGION_EPOCH"] == {"Ref": "RegionEpoch"}, name


def test_the_services_database_host_is_a_writer_endpoint(
    templates: dict[str, dict[str, Any]],
) -> None:
    root = templates["root"]
    host = resources(root, "AWS::CloudFormation::Stack")["Services"]["Properties"]["Parameters"][
        "DatabaseHost"
    ]
    data_outputs = templates["data"]["Outputs"]

    # The global writer endpoint when one is given, else this Region's cluster endpoint.
    assert host == {
        "Fn::If": [
            "UsesGlobalWriter",
            {"Ref": "GlobalWriterEndpoint"},
            {"Fn::GetAtt": ["Data", "Outputs.WriterEndpoint"]},
        ]
    }
    assert data_outputs["WriterEndpoint"]["Value"] == {
        "Fn::GetAtt": ["DatabaseCluster", "Endpoint.Address"]
    }


@pytest.mark.parametrize(
    "params_file",
    sorted((REPO / "deploy/ecs/params").glob("*/*.json")),
    ids=lambda p: f"{p.parent.name}/{p.stem}",
)
def test_parameter_files_fit_the_root_stack(params_file: Path) -> None:
    root = deployer.load_template(deployer.TEMPLATES_DIR / "root.yaml")
    declared = root["Parameters"]
    given = json.loads(params_file.read_text())
    from_the_tool = {
        "ArtifactBucket",
        "TemplatePrefix",
        "SagaDefinitionKey",
        "AdapterCodeKey",
        "ImageTag",
        # tools/deployer/aws.py: the outputs of edge-global.yaml's stack in us-east-1
        "EdgeWebAclArn",
        "EdgeCertificateArn",
        # tools/deployer/aws.py: the Region's S3 prefix list
        "S3PrefixListId",
    }

    assert set(given) <= set(declared)
    required = {name for name, spec in declared.items() if "Default" not in spec}
    assert required - from_the_tool <= set(given)
    for name, value in given.items():
        if "AllowedValues" in declared[name]:
            assert value in declared[name]["AllowedValues"], name
    assert given["EnvironmentName"] == params_file.parent.name
    if given.get("DatabaseGlobalRole") == "secondary":
        assert given["RegionRole"] == "standby"

"""The Kubernetes manifests: rendered offline, every object valid against the Kubernetes schema
(strict: unknown fields refused), and the properties a production deployment relies on."""

from __future__ import annotations

import shutil
import subprocess
from typing import TYPE_CHECKING, Any

import kubernetes_validate
import pytest
import yaml

from consumers.registry import CONSUMERS
from tests.support.commands import CommandRefusedError, check_sluice_command
from tests.support.kustomize import render
from tests.support.paths import ROOT

if TYPE_CHECKING:
    from pathlib import Path

K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
Obj = dict[str, Any]


def by_name(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_specs(objects: list[Obj]) -> list[tuple[str, Obj]]:
    specs = []
    for obj in objects:
        spec = obj.get("spec", {})
        if obj["kind"] in ("Deployment", "Job"):
            specs.append((obj["metadata"]["name"], spec["template"]["spec"]))
        elif obj["kind"] == "CronJob":
            specs.append((obj["metadata"]["name"], spec["jobTemplate"]["spec"]["template"]["spec"]))
    return specs


@pytest.fixture(scope="module")
def rendered() -> list[Obj]:
    return render(OVERLAY)


@pytest.mark.parametrize("directory", [BASE, OVERLAY], ids=["base", "overlay"])
def test_every_object_is_valid_against_the_kubernetes_schema(directory: Path) -> None:
    version = kubernetes_validate.latest_version()
    objects = render(directory)
    assert len(objects) > 20
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            name = f"{obj['kind']}/{obj['metadata']['name']}"
            pytest.fail(f"{name}: {exc.message} at {list(exc.path)}")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH")
@pytest.mark.parametrize("directory", [BASE, OVERLAY], ids=["base", "overlay"])
def test_the_loader_renders_what_kubectl_kustomize_renders(directory: Path) -> None:
    output = subprocess.run(  # noqa: S603 - a fixed command
        ["kubectl", "kustomize", str(directory)],  # noqa: S607 - kubectl from PATH
        check=True,
        capture_output=True,
        text=True,
    ).stdout

    def keyed(objects: list[Obj]) -> dict[tuple[str, str, str], Obj]:
        return {
            (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
            for o in objects
        }

    theirs = keyed([doc for doc in yaml.safe_load_all(output) if doc])
    ours = keyed(render(directory))
    assert sorted(ours) == sorted(theirs)
    for key, obj in ours.items():
        assert obj == theirs[key], key


def test_the_overlay_sets_namespace_image_and_patches(rendered: list[Obj]) -> None:
    for obj in rendered:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "sluice"
    for name, spec in pod_specs(rendered):
        for container in [*spec["containers"], *spec.get("initContainers", [])]:
            assert container["image"] == "registry.example.com/sluice:0.1.0", name
    assert by_name(rendered, "Deployment", "sluice-ingest")["spec"]["replicas"] == 3
    hpa = by_name(rendered, "HorizontalPodAutoscaler", "sluice-ingest")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 20)


def test_ingest_is_highly_available_and_probed() -> None:
    ingest = render(BASE)
    deployment = by_name(ingest, "Deployment", "sluice-ingest")
    assert deployment["spec"]["replicas"] >= 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    labels = deployment["spec"]["selector"]["matchLabels"]
    assert by_name(ingest, "PodDisruptionBudget", "sluice-ingest")["spec"]["selector"] == {
        "matchLabels": labels
    }
    assert by_name(ingest, "Service", "sluice-ingest")["spec"]["selector"] == labels
    assert by_name(ingest, "HorizontalPodAutoscaler", "sluice-ingest")["spec"]["minReplicas"] >= 2


def test_every_consumer_group_has_a_deployment(rendered: list[Obj]) -> None:
    for name in CONSUMERS:
        deployment = by_name(rendered, "Deployment", f"sluice-consume-{name}")
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args == ["consume", name]
    by_name(rendered, "Deployment", "sluice-relay")


def test_jobs_and_cronjobs(rendered: list[Obj]) -> None:
    cronjobs = {o["metadata"]["name"]: o for o in rendered if o["kind"] == "CronJob"}
    assert cronjobs["sluice-reconcile-square"]["spec"]["schedule"] == "*/10 * * * *"
    assert set(cronjobs) == {
        "sluice-reconcile-square",
        "sluice-reconcile-square-ahead",
        "sluice-doctor",
        "sluice-reconcile-airtable",
        "sluice-reconcile-airtable-full",
        "sluice-airtable-webhooks-refresh",
    }
    # The doctor is a template for Jobs made on demand, never on its schedule.
    doctor = cronjobs["sluice-doctor"]["spec"]
    assert doctor["suspend"] is True
    assert doctor["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][0] == "doctor"
    for name, cronjob in cronjobs.items():
        spec = cronjob["spec"]
        assert spec["concurrencyPolicy"] == "Forbid", name
        assert spec["startingDeadlineSeconds"] > 0, name
        job = spec["jobTemplate"]["spec"]
        assert job["backoffLimit"] >= 0, name
        assert job["activeDeadlineSeconds"] > 0, name
    ahead = cronjobs["sluice-reconcile-square-ahead"]["spec"]["jobTemplate"]["spec"]
    assert ahead["template"]["spec"]["containers"][0]["args"] == ["reconcile", "square", "--ahead"]
    full = cronjobs["sluice-reconcile-airtable-full"]["spec"]["jobTemplate"]["spec"]
    assert full["template"]["spec"]["containers"][0]["args"] == ["reconcile", "airtable", "--full"]
    refresh = cronjobs["sluice-airtable-webhooks-refresh"]["spec"]["jobTemplate"]["spec"]
    assert refresh["template"]["spec"]["containers"][0]["args"] == [
        "airtable",
        "webhooks",
        "refresh",
        "--all",
    ]


def test_every_container_runs_a_real_sluice_command_locked_down(rendered: list[Obj]) -> None:
    specs = pod_specs(rendered)
    assert len(specs) >= 10
    for name, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] != 0, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in [*spec["containers"], *spec.get("initContainers", [])]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert container["resources"]["limits"]["memory"], name
            try:
                check_sluice_command(container["args"])
            except CommandRefusedError as exc:
                pytest.fail(f"{name}: {container['args']}: {exc}")


def test_network_policies_deny_by_default(rendered: list[Obj]) -> None:
    deny = by_name(rendered, "NetworkPolicy", "sluice-default-deny-ingress")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}


def test_the_example_secret_holds_only_placeholders(rendered: list[Obj]) -> None:
    from sluice.settings import Settings  # noqa: PLC0415

    secret = by_name(rendered, "Secret", "sluice")
    with pytest.raises(ValueError, match="placeholder"):
        Settings.model_validate(secret["stringData"])


def test_the_check_refuses_what_sluice_refuses() -> None:
    check_sluice_command(["reconcile", "square", "--from", "2025-01-01"])
    for wrong in (["reconcile"], ["reconcile", "hubspot"], ["relay", "--fast"], ["consume", "x"]):
        with pytest.raises(CommandRefusedError):
            check_sluice_command(wrong)


def test_the_api_is_highly_available_and_probed_on_its_health_endpoint() -> None:
    objects = render(BASE)
    deployment = by_name(objects, "Deployment", "sluice-api")
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "api"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    labels = deployment["spec"]["selector"]["matchLabels"]
    pdb = by_name(objects, "PodDisruptionBudget", "sluice-api")
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": labels}}
    service = by_name(objects, "Service", "sluice-api")
    assert service["spec"]["selector"] == labels
    assert service["spec"]["type"] == "ClusterIP"


def listening_port(container: Obj) -> int:
    """The port the container's `sluice` command listens on, from its `--port` argument."""
    args = container["args"]
    return int(args[args.index("--port") + 1])


def test_every_service_reaches_the_port_its_component_listens_on(rendered: list[Obj]) -> None:
    deployments = [o for o in rendered if o["kind"] == "Deployment"]
    services = [o for o in rendered if o["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} == {
        "sluice-ingest",
        "sluice-admin",
        "sluice-api",
    }
    for service in services:
        name = service["metadata"]["name"]
        selected = [
            d
            for d in deployments
            if service["spec"]["selector"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, name
        container = selected[0]["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for port in service["spec"]["ports"]:
            assert ports[port["targetPort"]] == listening_port(container), name


def admitted(policy: Obj, port: int) -> list[Obj]:
    """The peers (`from` entries) of the policy's rules that open `port`."""
    return [
        peer
        for rule in policy["spec"]["ingress"]
        if any(p["port"] == port for p in rule["ports"])
        for peer in rule.get("from", [{}])
    ]


def test_the_api_admits_only_labelled_clients_and_admin_only_the_namespace(
    rendered: list[Obj],
) -> None:
    api = by_name(rendered, "NetworkPolicy", "sluice-api")
    assert api["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "sluice-api"}}
    assert admitted(api, 8002) == [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"sluice/api-client": "true"}}}
    ]
    admin = by_name(rendered, "NetworkPolicy", "sluice-admin")
    assert {"podSelector": {}} in admitted(admin, 8001)
    # The label the README tells the staff app and the portal to carry.
    readme = (ROOT / "README.md").read_text()
    assert '`sluice/api-client: "true"`' in readme
    assert "kubectl port-forward svc/sluice-admin 8001" in readme


def init_args(spec: Obj) -> list[list[str]]:
    return [container["args"] for container in spec.get("initContainers", [])]


def test_every_pod_migrates_first_and_kafka_users_ensure_their_topics(
    rendered: list[Obj],
) -> None:
    specs = dict(pod_specs(rendered))
    assert len(specs) >= 13
    kafka_users = {"sluice-relay", *(f"sluice-consume-{name}" for name in CONSUMERS)}
    for name, spec in specs.items():
        expected = [["migrate"], ["topics", "ensure"]] if name in kafka_users else [["migrate"]]
        if name == "sluice-doctor":
            expected = []  # it reports the migration level as it finds it
        assert init_args(spec) == expected, name
        volumes = {volume["name"] for volume in spec["volumes"]}
        for container in spec.get("initContainers", []):
            assert {m["name"] for m in container["volumeMounts"]} <= volumes, name
            assert container["envFrom"] == spec["containers"][0]["envFrom"], name


def test_an_upgrade_is_one_apply(tmp_path: Path) -> None:
    # No Job: a Job's pod template is immutable, so applying a new release over one fails.
    first = render(OVERLAY)
    assert not [o for o in first if o["kind"] == "Job"]
    # The next release changes the image and nothing else: every object is updated in place.
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [str(OVERLAY)],
                "images": [{"name": "registry.example.com/sluice", "newTag": "0.2.0"}],
            }
        )
    )
    second = render(tmp_path)
    assert len(second) == len(first)
    for old, new in zip(first, second, strict=True):
        assert yaml.safe_dump(old).replace(":0.1.0", ":0.2.0") == yaml.safe_dump(new)
    assert any(":0.2.0" in yaml.safe_dump(o) for o in second)

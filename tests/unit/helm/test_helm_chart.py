"""The chart lints, renders objects Kubernetes accepts, and renders what the operator configured."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helm_support import CHART, KUBE_VERSION, PRODUCTION_VALUES, RELEASE, HelmRun, Rendered, render

from fedrelay.adapters.devnet.toolchain import REPO_ROOT

STAGE_COMPONENTS = {
    "relayer-watch",
    "relayer-attest",
    "relayer-assemble",
    "relayer-fetch",
    "relayer-deliver",
    "coordinator",
}
SELECTOR_KEYS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "fedrelay.io/chain",
    "fedrelay.io/guardian",
}
COMMON_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


def _expected_units(values: dict[str, Any]) -> set[tuple[str, str]]:
    """(component, chain or guardian) of every Deployment the values ask for."""
    relayer = values["relayer"]
    units: set[tuple[str, str]] = set()
    if relayer["watch"]["enabled"]:
        units |= {("relayer-watch", chain) for chain in relayer["watch"]["chains"]}
    if relayer["attest"]["enabled"]:
        units |= {("relayer-attest", g["name"]) for g in relayer["attest"]["guardians"]}
    for stage in ("assemble", "fetch"):
        if relayer[stage]["enabled"]:
            units.add((f"relayer-{stage}", ""))
    if relayer["deliver"]["enabled"]:
        units |= {("relayer-deliver", c["name"]) for c in relayer["deliver"]["chains"]}
    if values["coordinator"]["enabled"]:
        units.add(("coordinator", ""))
    return units


def test_helm_carries_the_version_information_of_its_release(helm: HelmRun) -> None:
    """`make setup` stamps in what helm's release build does; without it helm would render for
    Kubernetes 1.20, below the chart's kubeVersion, and every command here would need
    --kube-version."""
    setup = (REPO_ROOT / "tools" / "setup.sh").read_text()
    pinned = re.search(r"^HELM_VERSION=(\S+)$", setup, re.MULTILINE)
    commit = re.search(r"^HELM_GIT_COMMIT=([0-9a-f]{40})$", setup, re.MULTILINE)
    assert pinned is not None
    assert commit is not None
    result = helm("version", "--template", "{{.Version}} {{.GitCommit}} {{.GitTreeState}}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [pinned.group(1), commit.group(1), "clean"]


@pytest.mark.parametrize("values", [[], [PRODUCTION_VALUES]], ids=["default", "production"])
def test_lint_strict_passes(helm: HelmRun, values: list[Any]) -> None:
    args = ["lint", "--strict", str(CHART)]
    for path in values:
        args += ["-f", str(path)]
    result = helm(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_every_object_passes_kubernetes_schema_validation(release: Rendered) -> None:
    checked = 0
    for obj in release.objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: no bundled schema; its shape is asserted in its own test
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        checked += 1
    assert checked >= 10


def test_one_deployment_per_configured_stage_and_chain(release: Rendered) -> None:
    rendered = set()
    for deployment in release.of_kind("Deployment"):
        labels = deployment["metadata"]["labels"]
        unit = labels.get("fedrelay.io/chain") or labels.get("fedrelay.io/guardian") or ""
        component = labels["app.kubernetes.io/component"]
        if component == "coordinator":
            unit = ""
        assert (component, unit) not in rendered, f"two Deployments for {component} {unit}"
        rendered.add((component, unit))
    assert rendered == _expected_units(release.values)


def test_default_and_production_deploy_the_documented_stage_sets(
    default_release: Rendered, production_release: Rendered
) -> None:
    def components(r: Rendered) -> set[str]:
        return {
            d["metadata"]["labels"]["app.kubernetes.io/component"] for d in r.of_kind("Deployment")
        }

    assert components(default_release) == STAGE_COMPONENTS - {"relayer-fetch"}
    assert components(production_release) == {
        "relayer-watch",
        "relayer-fetch",
        "relayer-deliver",
        "coordinator",
    }
    watched = {
        d["metadata"]["labels"]["fedrelay.io/chain"]
        for d in production_release.of_kind("Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "relayer-watch"
    }
    assert watched == {"base", "arbitrum", "optimism", "solana"}


def test_every_object_carries_the_standard_labels(release: Rendered) -> None:
    for obj in release.objects:
        labels = obj["metadata"]["labels"]
        for key in COMMON_LABELS:
            assert labels.get(key), f"{obj['kind']} {obj['metadata']['name']} lacks {key}"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_selectors_are_small_stable_and_match_their_pods(release: Rendered) -> None:
    for deployment in release.of_kind("Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert set(selector) <= SELECTOR_KEYS, "selectors must not carry version or chart labels"
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()
    selectors = [
        tuple(sorted(d["spec"]["selector"]["matchLabels"].items()))
        for d in release.of_kind("Deployment")
    ]
    assert len(selectors) == len(set(selectors)), "two Deployments would share pods"
    for pdb in release.of_kind("PodDisruptionBudget"):
        owner = release.named("Deployment", pdb["metadata"]["name"])
        assert pdb["spec"]["selector"]["matchLabels"] == owner["spec"]["selector"]["matchLabels"]


def test_probes_use_the_health_endpoints_on_the_health_port(release: Rendered) -> None:
    port = release.values["healthPort"]
    for deployment in release.of_kind("Deployment"):
        container = _container(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["health"] == port
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert _env(container)["FEDRELAY_HEALTH_PORT"]["value"] == str(port)


def test_grace_period_exceeds_each_stage_drain_time(release: Rendered) -> None:
    for deployment in release.of_kind("Deployment"):
        drain = int(_env(_container(deployment))["FEDRELAY_DRAIN_SECONDS"]["value"])
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > drain, deployment["metadata"]["name"]


def test_commands_match_the_process_contract(release: Rendered) -> None:
    for deployment in release.of_kind("Deployment"):
        labels = deployment["metadata"]["labels"]
        component = labels["app.kubernetes.io/component"]
        args = _container(deployment)["args"]
        env = _env(_container(deployment))
        service = env["OTEL_SERVICE_NAME"]["value"]
        if component == "coordinator":
            assert args[:2] == ["coordinator", "run"]
            assert service == "fedrelay-coordinator"
            continue
        stage = component.removeprefix("relayer-")
        assert args[:4] == ["relayer", "run", "--stage", stage]
        if stage in ("watch", "deliver"):
            chain = labels["fedrelay.io/chain"]
            assert args[4:6] == ["--chain", chain]
            assert service == f"fedrelay-relayer-{stage}-{chain}"
            assert deployment["spec"]["replicas"] == 1
            assert deployment["spec"]["strategy"]["type"] == "Recreate"
        elif stage == "attest":
            assert args[4] == "--guardian-key-file"
            assert service == f"fedrelay-relayer-attest-{labels['fedrelay.io/guardian']}"
        else:
            assert service == f"fedrelay-relayer-{stage}"
        assert env["FEDRELAY_CHAINS_FILE"]["value"] == "/etc/fedrelay/chains.yaml"
        assert env["FEDRELAY_KAFKA_BOOTSTRAP"]["value"] == release.values["kafka"]["bootstrap"]


def test_containers_run_non_root_on_a_read_only_root(release: Rendered) -> None:
    pods = [d["spec"]["template"] for d in release.of_kind("Deployment")]
    pods += [j["spec"]["template"] for j in release.of_kind("Job")]
    for pod in pods:
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] > 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        (tmp,) = [v for v in spec["volumes"] if v["name"] == "tmp"]
        assert "emptyDir" in tmp
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["runAsNonRoot"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
            assert container["resources"]["requests"]


PRIVATE_KEY_SHAPES = (
    re.compile(r"(?<![0-9a-fA-F])(0x)?[0-9a-fA-F]{64}(?![0-9a-fA-F])"),  # secp256k1 / ed25519 seed
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\[(\s*\d{1,3}\s*,){63}\s*\d{1,3}\s*\]"),  # a Solana keypair file's bytes
    re.compile(r"postgres(ql)?(\+\w+)?://"),  # a database URL (it holds the password)
)


def _without_checksums(text: str) -> str:
    return re.sub(r"checksum/\w+: [0-9a-f]{64}", "checksum: <hash>", text)


def test_no_secret_material_is_rendered(release: Rendered) -> None:
    assert not release.of_kind("Secret"), "the chart must not create Secrets"
    text = _without_checksums(release.text)
    for shape in PRIVATE_KEY_SHAPES:
        assert not shape.search(text), f"rendered manifests contain {shape.pattern!r}"


def test_secrets_are_used_only_by_reference(release: Rendered) -> None:
    values = release.values
    key_secrets = {c["existingSecret"] for c in values["relayer"]["deliver"]["chains"]}
    if values["relayer"]["attest"]["enabled"]:
        key_secrets |= {g["existingSecret"] for g in values["relayer"]["attest"]["guardians"]}
    if values["coordinator"]["signerKey"]["existingSecret"]:
        key_secrets.add(values["coordinator"]["signerKey"]["existingSecret"])
    blob_store = values["coordinator"]["blobStore"]
    if blob_store["type"] == "s3" and blob_store["s3"]["existingSecret"]:
        key_secrets.add(blob_store["s3"]["existingSecret"])
    mounted: set[str] = set()
    pods = [d["spec"]["template"]["spec"] for d in release.of_kind("Deployment")]
    pods += [j["spec"]["template"]["spec"] for j in release.of_kind("Job")]
    for spec in pods:
        container = spec["containers"][0]
        env = _env(container)
        assert env["FEDRELAY_DATABASE_URL"] == {
            "name": "FEDRELAY_DATABASE_URL",
            "valueFrom": {
                "secretKeyRef": {
                    "name": values["database"]["existingSecret"],
                    "key": values["database"]["existingSecretKey"],
                }
            },
        }
        for volume in spec["volumes"]:
            if "secret" in volume:
                mounted.add(volume["secret"]["secretName"])
                assert volume["secret"]["defaultMode"] == 0o440
                mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
                assert mount["readOnly"] is True
    assert mounted == key_secrets


def test_key_files_are_passed_as_paths_of_mounted_secrets(release: Rendered) -> None:
    for deployment in release.of_kind("Deployment"):
        container = _container(deployment)
        args = container["args"]
        for flag in ("--guardian-key-file", "--signer-key-file"):
            if flag in args:
                path = args[args.index(flag) + 1]
                mounts = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == "key"]
                assert mounts == [path.rsplit("/", 1)[0]]
    deliverers = [
        d
        for d in release.of_kind("Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "relayer-deliver"
    ]
    assert deliverers
    assert all("--signer-key-file" in _container(d)["args"] for d in deliverers)


def test_migration_job_is_a_pre_install_and_pre_upgrade_hook(release: Rendered) -> None:
    (job,) = release.of_kind("Job")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    policy = set(annotations["helm.sh/hook-delete-policy"].split(","))
    assert policy == {"before-hook-creation", "hook-succeeded"}
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["db", "upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # the chart's ServiceAccount is not there yet when a pre-install hook runs
    assert "serviceAccountName" not in job["spec"]["template"]["spec"]


def test_chains_config_map_lists_the_configured_chains(release: Rendered) -> None:
    (config,) = [
        c for c in release.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-chains")
    ]
    chains = yaml.safe_load(config["data"]["chains.yaml"])["chains"]
    expected = [
        {
            "name": c["name"],
            "wormhole_chain_id": c["wormholeChainId"],
            "kind": c["kind"],
            "rpc_url": c["rpcUrl"],
            "address": c["address"],
            "finality": c["finality"],
        }
        for c in release.values["chains"]
    ]
    assert chains == expected
    for deployment in release.of_kind("Deployment"):
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        assert {"name": "chains", "configMap": {"name": config["metadata"]["name"]}} in volumes


def test_coordinator_service_exposes_the_worker_api(release: Rendered) -> None:
    name = f"{RELEASE}-fedrelay-coordinator"
    service = release.named("Service", name)
    deployment = release.named("Deployment", name)
    port = release.values["coordinator"]["service"]["port"]
    assert service["spec"]["ports"] == [
        {"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    ports = {p["name"]: p["containerPort"] for p in _container(deployment)["ports"]}
    assert ports["http"] == port


def test_autoscaled_deployments_leave_replicas_to_the_autoscaler(
    production_release: Rendered,
) -> None:
    hpas = production_release.of_kind("HorizontalPodAutoscaler")
    assert {h["metadata"]["name"] for h in hpas} == {
        f"{RELEASE}-fedrelay-fetch",
        f"{RELEASE}-fedrelay-coordinator",
    }
    for hpa in hpas:
        assert hpa["apiVersion"] == "autoscaling/v2"
        target = hpa["spec"]["scaleTargetRef"]
        deployment = production_release.named("Deployment", target["name"])
        assert "replicas" not in deployment["spec"]
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_service_monitor_only_where_its_api_exists(
    default_release: Rendered, production_release: Rendered
) -> None:
    assert not default_release.of_kind("ServiceMonitor")
    (monitor,) = production_release.of_kind("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    (metrics,) = [
        s for s in production_release.of_kind("Service") if s["spec"].get("clusterIP") == "None"
    ]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= metrics["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "health"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    for deployment in production_release.of_kind("Deployment"):
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert metrics["spec"]["selector"].items() <= pod_labels.items()


def test_tracing_endpoint_reaches_every_process(
    default_release: Rendered, production_release: Rendered
) -> None:
    for deployment in production_release.of_kind("Deployment"):
        env = _env(_container(deployment))
        assert (
            env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"]
            == "http://otel-collector.observability:4318"
        )
        assert "deployment.environment=production" in env["OTEL_RESOURCE_ATTRIBUTES"]["value"]
    for deployment in default_release.of_kind("Deployment"):
        env = _env(_container(deployment))
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env
        assert env["OTEL_TRACES_EXPORTER"]["value"] == "none"


def test_every_process_logs_json_unless_told_otherwise(default_release: Rendered) -> None:
    for deployment in default_release.of_kind("Deployment"):
        assert _env(_container(deployment))["FEDRELAY_LOG_FORMAT"]["value"] == "json"
    text = render(extra=["--set", "logFormat=text"])
    for deployment in text.of_kind("Deployment"):
        assert _env(_container(deployment))["FEDRELAY_LOG_FORMAT"]["value"] == "text"


def test_long_release_names_keep_instance_names_distinct_and_short() -> None:
    release = render(extra=["--set", "fullnameOverride=" + "a" * 63])
    names = [(o["kind"], o["metadata"]["name"]) for o in release.objects]
    assert len(names) == len(set(names))
    for kind, name in names:
        assert len(name) <= 63, f"{kind} {name}"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
    deployments = {o["metadata"]["name"] for o in release.of_kind("Deployment")}
    assert any(n.endswith("-deliver-worker-solana") for n in deployments)

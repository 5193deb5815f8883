"""deploy/k8s: every Kubernetes object against the schemas bundled in kubernetes-validate
(strict: unknown fields fail; offline), the KEDA ScaledObjects against a hand-written
schema (schemas/SOURCES.md), then the wiring: probes, resources, scaling limits, config."""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from services.alert.config import load_alerting
from services.ingest.listening import load_listening
from shared.config import Settings
from tests.deploy.deployfiles import (
    K8S,
    SCHEMAS,
    by_kind,
    k8s_cpu_millis,
    k8s_documents,
    k8s_memory_bytes,
    load_json,
)

KUBERNETES_VERSION = "1.33.0"
PARTITIONS = Settings().partitions  # 12: the cap on useful consumers in a group
HEALTH_PORT = {"ingest": 8001, "classify": 8002, "alert": 8000}

CORE = [(p, d) for p, d in k8s_documents() if d["kind"] != "ScaledObject"]


@pytest.mark.parametrize(
    "doc",
    [d for _, d in CORE],
    ids=[f"{p.name}:{d['kind']}/{d['metadata']['name']}" for p, d in CORE],
)
def test_manifest_matches_the_kubernetes_schema(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_strict_validation_bites() -> None:
    doc = by_kind("Deployment")["thirdring-classify"]
    broken = yaml.safe_load(yaml.safe_dump(doc))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def keda_schema() -> dict[str, Any]:
    return load_json(SCHEMAS / "keda-scaledobject.schema.json")


def test_scaled_objects_match_the_keda_schema() -> None:
    validator = jsonschema.Draft202012Validator(keda_schema())
    objects = by_kind("ScaledObject")
    assert set(objects) == {"thirdring-classify", "thirdring-alert"}
    for name, doc in objects.items():
        errors = list(validator.iter_errors(doc))
        assert not errors, f"{name}: " + "; ".join(e.message for e in errors)


def test_keda_schema_bites() -> None:
    doc = yaml.safe_load(yaml.safe_dump(by_kind("ScaledObject")["thirdring-alert"]))
    doc["spec"]["triggers"][0]["metadata"]["lagTreshold"] = "5"
    del doc["spec"]["triggers"][0]["metadata"]["lagThreshold"]
    assert list(jsonschema.Draft202012Validator(keda_schema()).iter_errors(doc))


def test_keda_scales_the_consumer_groups_on_lag_within_the_partitions() -> None:
    settings = Settings()
    env = by_kind("ConfigMap")["thirdring-env"]["data"]
    deployments = by_kind("Deployment")
    expected = {
        "thirdring-classify": (settings.group("classify"), settings.topic_raw),
        "thirdring-alert": (settings.group("alert"), settings.topic_scored),
    }
    for name, so in by_kind("ScaledObject").items():
        target = so["spec"]["scaleTargetRef"]["name"]
        assert target == name and target in deployments
        assert "replicas" not in deployments[target]["spec"], f"{target}: KEDA owns replicas"
        assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]
        assert so["spec"]["maxReplicaCount"] <= PARTITIONS
        (trigger,) = so["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        meta = trigger["metadata"]
        assert (meta["consumerGroup"], meta["topic"]) == expected[name]
        assert meta["bootstrapServers"] == env["KAFKA_BOOTSTRAP_SERVERS"]
        assert int(meta["lagThreshold"]) > 0
    # The API pods are in the alert group too: together they stay within the partitions.
    hpa = by_kind("HorizontalPodAutoscaler")["thirdring-api"]
    alert_max = by_kind("ScaledObject")["thirdring-alert"]["spec"]["maxReplicaCount"]
    assert alert_max + hpa["spec"]["maxReplicas"] <= PARTITIONS


def test_hpa_targets_the_api_on_cpu() -> None:
    hpas = by_kind("HorizontalPodAutoscaler")
    assert set(hpas) == {"thirdring-api"}
    hpa = hpas["thirdring-api"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", "thirdring-api")
    api = by_kind("Deployment")["thirdring-api"]
    assert "replicas" not in api["spec"], "the HPA owns replicas"
    container = api["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["run", "alert"]  # the alert service with its HTTP API
    assert "cpu" in container["resources"]["requests"]  # utilization needs a request
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_deployments_probe_http_and_set_resources() -> None:
    for name, dep in by_kind("Deployment").items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert dep["spec"]["selector"]["matchLabels"].items() <= (
            dep["spec"]["template"]["metadata"]["labels"].items()
        )
        (c,) = pod["containers"]
        service = c["args"][1]
        assert c["args"][0] == "run" and service in HEALTH_PORT, name
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe, path in (
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
            ("startupProbe", "/healthz"),
        ):
            get = c[probe]["httpGet"]
            assert get["path"] == path, (name, probe)
            assert ports[get["port"]] == HEALTH_PORT[service], (name, probe)
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        host_var = (
            "THIRDRING_API_HOST" if service == "alert" else f"THIRDRING_{service.upper()}_HOST"
        )
        assert env.get(host_var) == "0.0.0.0", f"{name}: probes need {host_var}=0.0.0.0"
        res = c["resources"]
        for kind in ("cpu", "memory"):
            assert kind in res["requests"] and kind in res["limits"], (name, kind)
        assert k8s_memory_bytes(res["requests"]["memory"]) <= k8s_memory_bytes(
            res["limits"]["memory"]
        )
        assert k8s_cpu_millis(res["requests"]["cpu"]) <= k8s_cpu_millis(res["limits"]["cpu"])
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
        if sc.get("readOnlyRootFilesystem"):
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), name
    classify = by_kind("Deployment")["thirdring-classify"]["spec"]["template"]["spec"]
    limit = classify["containers"][0]["resources"]["limits"]["memory"]
    assert k8s_memory_bytes(limit) <= 1024**3


def test_migration_job_runs_db_upgrade() -> None:
    job = by_kind("Job")["thirdring-migrate"]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    assert pod["containers"][0]["args"] == ["db", "upgrade"]


def test_services_select_pods_and_named_ports() -> None:
    deployments = by_kind("Deployment")
    services = by_kind("Service")
    assert set(services) >= {"thirdring-api", "thirdring-ingest"}
    for name, svc in services.items():
        dep = deployments[name]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items(), name
        ports = {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports, name


def test_config_and_secret_references_resolve() -> None:
    configmaps = by_kind("ConfigMap")
    secret_keys = set(by_kind("Secret")["thirdring-secrets"]["stringData"])
    workloads = [*by_kind("Deployment").values(), *by_kind("Job").values()]
    for w in workloads:
        pod = w["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            for ref in c.get("envFrom", []):
                assert ref["configMapRef"]["name"] in configmaps
            for e in c.get("env", []):
                key = e.get("valueFrom", {}).get("secretKeyRef")
                if key and not key.get("optional"):
                    assert key["name"] == "thirdring-secrets" and key["key"] in secret_keys
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes
        for v in volumes.values():
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps
            if "secret" in v:
                assert {i["key"] for i in v["secret"]["items"]} <= secret_keys
    # Every workload names the same image, and it is pinned.
    images = {c["image"] for w in workloads for c in w["spec"]["template"]["spec"]["containers"]}
    assert len(images) == 1 and not next(iter(images)).endswith(":latest")


def test_configured_files_are_valid(tmp_path) -> None:  # type: ignore[no-untyped-def]
    files = by_kind("ConfigMap")["thirdring-files"]["data"]
    (tmp_path / "alerting.yaml").write_text(files["alerting.yaml"])
    (tmp_path / "listening.yaml").write_text(files["listening.yaml"])
    load_alerting(tmp_path / "alerting.yaml")
    load_listening(tmp_path / "listening.yaml")
    env = by_kind("ConfigMap")["thirdring-env"]["data"]
    assert env["THIRDRING_ALERTING_FILE"] == "/etc/thirdring/alerting.yaml"
    assert int(env["THIRDRING_PARTITIONS"]) == PARTITIONS


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == present
    assert kustomization["namespace"] == "thirdring"
    for _, doc in k8s_documents():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "thirdring"

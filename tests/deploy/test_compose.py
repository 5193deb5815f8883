"""deploy/docker-compose.yml: the Compose Specification schema, then what must hold for the
stack to start in order, stay healthy and scale (Docker cannot run here: static checks)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from services.alert.config import load_alerting
from services.ingest.listening import load_listening
from tests.deploy.deployfiles import (
    COMPOSE_FILE,
    DEPLOY,
    SCHEMAS,
    compose,
    compose_raw,
    compose_variables,
    load_json,
    memory_bytes,
)

# The thirdring services that `--scale` must work for (consumer groups, or stateless).
SCALABLE = ("ingest", "classify", "alert")
# Command -> the HTTP port its /readyz answers on.
HEALTH_PORT = {"ingest": 8001, "classify": 8002, "alert": 8000}


def thirdring_services() -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose()["services"].items()
        if str(svc.get("image", "")).startswith("thirdring")
    }


def long_running() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in thirdring_services().items() if s["command"][:1] == ["run"]}


def test_compose_file_matches_the_compose_specification() -> None:
    schema = load_json(SCHEMAS / "compose-spec.json")
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(compose_raw()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_schema_rejects_a_broken_file() -> None:
    """The schema check bites: an unknown key and an unknown condition are errors."""
    schema = load_json(SCHEMAS / "compose-spec.json")
    broken = compose_raw()
    broken["services"]["classify"]["restrat"] = "always"
    broken["services"]["ingest"]["depends_on"]["kafka"]["condition"] = "healthy"
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(broken))
    assert len(errors) >= 2


def test_the_expected_services_are_there() -> None:
    services = compose()["services"]
    assert set(services) >= {"kafka", "postgres", "migrate", "ingest", "classify", "alert", "api"}
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "KRaft" in COMPOSE_FILE.read_text()
    env = services["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"]), "CLUSTER_ID: base64 UUID"
    assert int(env["KAFKA_NUM_PARTITIONS"]) == 12
    assert services["postgres"]["image"].startswith("postgres:")


def test_no_image_uses_latest_or_no_tag() -> None:
    for name, svc in compose()["services"].items():
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"


def test_dependencies_wait_for_health_and_migration() -> None:
    services = compose()["services"]
    for name in ("kafka", "postgres"):
        assert services[name]["healthcheck"]["test"], f"{name} needs a health check"
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            want = "service_completed_successfully" if dep == "migrate" else "service_healthy"
            assert cond["condition"] == want, f"{name} -> {dep}: {cond}"
    for name, svc in thirdring_services().items():
        deps = svc.get("depends_on") or {}
        if svc["command"] == ["run", "classify"]:
            assert "kafka" in deps  # classify reads no table
            continue
        assert "postgres" in deps, name
        if name != "migrate":
            assert "kafka" in deps and "migrate" in deps, name


def test_migrate_runs_db_upgrade_once() -> None:
    migrate = compose()["services"]["migrate"]
    assert migrate["command"] == ["db", "upgrade"]
    assert migrate["restart"] == "no"


def test_every_long_running_service_probes_its_http_readyz() -> None:
    for name, svc in long_running().items():
        port = HEALTH_PORT[svc["command"][1]]
        test = " ".join(svc["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/readyz" in test, f"{name}: {test}"
        assert svc["healthcheck"]["test"][0] == "CMD"
        assert "curl" not in test and "wget" not in test  # not in python:3.11-slim
        assert "start_period" in svc["healthcheck"], name
        host = svc["environment"].get(f"THIRDRING_{svc['command'][1].upper()}_HOST", "")
        if svc["command"][1] == "alert":
            host = svc["environment"]["THIRDRING_API_HOST"]
        assert host == "0.0.0.0", f"{name} must listen beyond loopback (host {host!r})"


def test_restart_policies() -> None:
    for name, svc in compose()["services"].items():
        if name == "migrate":
            continue
        assert svc.get("restart") in ("unless-stopped", "always", "on-failure"), name


def test_resource_limits_and_classify_within_one_gigabyte() -> None:
    for name, svc in compose()["services"].items():
        limits = svc["deploy"]["resources"]["limits"]
        assert "memory" in limits and "cpus" in limits, name
    classify = compose()["services"]["classify"]["deploy"]["resources"]["limits"]
    assert memory_bytes(classify["memory"]) <= 1024**3


def _fixed_host_port(port: Any) -> bool:
    if isinstance(port, dict):
        return bool(port.get("published"))
    parts = str(port).split(":")
    host = parts[-2] if len(parts) >= 2 else ""
    return bool(host)


def test_scalable_services_have_no_container_name_and_no_fixed_host_port() -> None:
    services = compose()["services"]
    for name in SCALABLE:
        svc = services[name]
        assert "container_name" not in svc, name
        fixed = [p for p in svc.get("ports", []) if _fixed_host_port(p)]
        assert not fixed, f"{name} cannot scale with fixed host ports {fixed}"
        assert "replicas" not in svc.get("deploy", {}), f"{name}: let --scale decide"
    # One published API, and it is the alert service with its HTTP API.
    published = [n for n, s in services.items() if any(map(_fixed_host_port, s.get("ports", [])))]
    assert published == ["api"]
    assert services["api"]["command"] == ["run", "alert"]
    assert "--no-api" not in services["api"]["command"]


def test_commands_of_the_services() -> None:
    services = compose()["services"]
    assert services["ingest"]["command"] == ["run", "ingest"]
    assert services["classify"]["command"] == ["run", "classify"]
    assert services["alert"]["command"][:2] == ["run", "alert"]


def test_secrets_are_files_and_declared() -> None:
    data = compose()
    declared = data.get("secrets", {})
    for name, secret in declared.items():
        assert "file" in secret, f"secret {name} should come from a file"
        assert (DEPLOY / secret["file"]).parent.is_dir()
    for name, svc in data["services"].items():
        mine = {s if isinstance(s, str) else s["source"] for s in svc.get("secrets", [])}
        assert mine <= set(declared), name
        for key, value in (svc.get("environment") or {}).items():
            if key.endswith("_FILE") and str(value).startswith("/run/secrets/"):
                assert Path(value).name in mine, f"{name}: {key} names a secret it lacks"
            # no secret values in the file itself
            if re.search(r"SECRET|TOKEN|PASSWORD", key) and not key.endswith("_FILE"):
                assert str(value) in ("", "required") or "${" in str(value), (name, key)
    assert (DEPLOY / "secrets" / ".gitignore").read_text().startswith("*")


def test_bind_mounts_exist_and_are_read_only() -> None:
    for name, svc in compose()["services"].items():
        for vol in svc.get("volumes", []):
            source, _, rest = str(vol).partition(":")
            if source.startswith("."):
                assert (DEPLOY / source).is_file(), f"{name}: {source} missing"
                assert rest.endswith(":ro"), f"{name}: mount {vol} read-only"


def test_mounted_config_files_are_valid() -> None:
    """The files the stack mounts load with the services' own loaders and need no secrets."""
    alerting = load_alerting(DEPLOY / "alerting.compose.yaml")
    assert all(c == "log" for c in alerting.default_channels)
    assert not alerting.channels
    listening = load_listening(DEPLOY / "listening.compose.yaml")
    assert listening.brands
    for svc in compose()["services"].values():
        env = svc.get("environment") or {}
        for key in ("THIRDRING_ALERTING_FILE", "THIRDRING_LISTENING_FILE"):
            if key in env:
                targets = [str(v).split(":")[1] for v in svc.get("volumes", [])]
                assert env[key] in targets


def test_env_example_names_every_variable() -> None:
    example = (DEPLOY / ".env.example").read_text()
    names = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, re.MULTILINE))
    used = compose_variables()
    missing = set(used) - names
    assert not missing, f"add to deploy/.env.example: {sorted(missing)}"
    assert "POSTGRES_PASSWORD" in used and used["POSTGRES_PASSWORD"] == ":?"


@pytest.mark.parametrize("path", ["alerting.example.yaml", "alerting.compose.yaml"])
def test_alerting_files_load(path: str) -> None:
    load_alerting(DEPLOY / path)


def test_thirdring_containers_are_hardened() -> None:
    for name, svc in thirdring_services().items():
        assert svc.get("read_only") is True and "/tmp" in svc.get("tmpfs", []), name
        assert svc.get("cap_drop") == ["ALL"], name
        assert "container_name" not in svc, name

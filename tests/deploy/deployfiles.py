"""Loading deploy/ for the tests: YAML documents, Compose interpolation, units, the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
BIN = Path(sys.executable).parent

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


def compose_raw() -> dict[str, Any]:
    """The compose file as written (anchors and merge keys resolved by YAML)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def interpolate(value: Any, env: dict[str, str] | None = None) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` with ``env`` (else
    the defaults; a required variable becomes ``required``)."""
    env = env or {}
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group("name"), m.group("op"), m.group("arg")
        if env.get(name):
            return env[name]
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            return "required"
        return ""

    return _VAR.sub(sub, value)


def compose_variables() -> dict[str, str | None]:
    """Every variable the compose file interpolates: name -> its operator (or None)."""
    found: dict[str, str | None] = {}
    for m in _VAR.finditer(COMPOSE_FILE.read_text()):
        found[m.group("name")] = m.group("op")
    return found


@cache
def compose() -> dict[str, Any]:
    return interpolate(compose_raw())


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes object under deploy/k8s (kustomization.yaml is not one)."""
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path, doc))
    return docs


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in k8s_documents() if d["kind"] == kind}


def memory_bytes(value: str | int) -> int:
    """A Compose memory size (``512M``, ``1G``, ``1gb``: binary multiples) in bytes."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmg]?)b?", str(value).strip().lower())
    assert m, f"not a memory size: {value!r}"
    factor = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2)]
    return int(float(m.group(1)) * factor)


def k8s_memory_bytes(value: str) -> int:
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|K|M|G)?", value)
    assert m, f"not a Kubernetes memory quantity: {value!r}"
    factor = {None: 1, "K": 1000, "M": 1000**2, "G": 1000**3}
    factor |= {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    return int(m.group(1)) * factor[m.group(2)]


def k8s_cpu_millis(value: str | int) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(m)?", str(value))
    assert m, f"not a Kubernetes CPU quantity: {value!r}"
    return int(float(m.group(1)) * (1 if m.group(2) else 1000))


@cache
def cli_help(words: tuple[str, ...]) -> str:
    """``thirdring WORDS --help`` of the installed command (fails if it is not a command)."""
    exe = BIN / "thirdring"
    assert exe.exists(), f"{exe} missing: pip install -e '.[dev]'"
    proc = subprocess.run(
        [str(exe), *words, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, f"`thirdring {' '.join(words)}` is not a command: {proc.stderr}"
    return proc.stdout

"""Every `thirdring ...` command and THIRDRING_* variable that deploy/ and the operations
guide use exists, and the migration runs as the plain process the migrate job runs."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from shared.config import Settings
from tests.deploy.deployfiles import (
    BIN,
    COMPOSE_FILE,
    DEPLOY,
    K8S,
    ROOT,
    by_kind,
    cli_help,
    compose,
    k8s_documents,
)

GROUPS = {"run", "db", "model", "tokens", "sources"}
DOCS = [ROOT / "docs" / "operations.md", DEPLOY / "secrets" / "README.md"]


def _split(words: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """(command words, options) of the words after `thirdring`."""
    cmd: list[str] = []
    for w in words:
        if w.startswith("-"):
            break
        if not re.fullmatch(r"[a-z][a-z-]*", w):
            break
        cmd.append(w)
        if len(cmd) == 1 and w not in GROUPS:
            break
        if len(cmd) == 2:
            break
    options = [w.split("=")[0] for w in words[len(cmd) :] if w.startswith("--")]
    return tuple(cmd), options


def used_commands() -> dict[tuple[str, ...], set[str]]:
    found: dict[tuple[str, ...], set[str]] = {}

    def add(words: list[str]) -> None:
        cmd, options = _split(words)
        if cmd:
            found.setdefault(cmd, set()).update(options)

    for svc in compose()["services"].values():
        if str(svc.get("image", "")).startswith("thirdring"):
            add(list(svc["command"]))
    for _, doc in k8s_documents():
        if doc["kind"] in ("Deployment", "Job"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                add(list(c["args"]))
    # `thirdring WORDS`, not `kubectl -n thirdring get ...` (the namespace)
    shell = re.compile(r"(?<![\w/.-])(?<!-n )thirdring ((?:[\w=.:/-]+ ?)+)")
    sources = [(DEPLOY / "Dockerfile").read_text()]
    for doc in DOCS:
        text = doc.read_text()
        # code blocks and inline code only: prose says "thirdring" too
        sources += re.findall(r"```.*?```", text, re.S) + re.findall(r"`[^`\n]+`", text)
    for text in sources:
        for m in shell.finditer(text):
            add(m.group(1).split())
    return found


def test_every_command_used_is_a_real_command() -> None:
    commands = used_commands()
    assert {("run", "ingest"), ("run", "classify"), ("run", "alert"), ("db", "upgrade")} <= set(
        commands
    )
    assert ("model", "prepare") in commands  # the Dockerfile
    for cmd, options in sorted(commands.items()):
        help_text = cli_help(cmd)
        for option in options:
            assert option in help_text, f"`thirdring {' '.join(cmd)}` has no {option}"


def known_variables() -> set[str]:
    names = {f"THIRDRING_{n.upper()}" for n in Settings.model_fields}
    for field in Settings.model_fields.values():
        if isinstance(field.validation_alias, str):
            names.add(field.validation_alias)
    # Variables read directly by a module (e.g. THIRDRING_MODEL_DIR, THIRDRING_ENCODER_BACKEND).
    for base in ("services", "shared"):
        for path in (ROOT / base).rglob("*.py"):
            names.update(re.findall(r"\"(THIRDRING_[A-Z0-9_]+)\"", path.read_text()))
    return names


def test_every_thirdring_variable_is_one_the_code_reads() -> None:
    known = known_variables()
    used: set[str] = set()
    for svc in compose()["services"].values():
        used.update(k for k in (svc.get("environment") or {}) if k.startswith("THIRDRING_"))
    used.update(re.findall(r"^(THIRDRING_[A-Z0-9_]+)=", (DEPLOY / ".env.example").read_text()))
    used.update(k for k in by_kind("ConfigMap")["thirdring-env"]["data"] if "THIRDRING" in k)
    for _, doc in k8s_documents():
        if doc["kind"] in ("Deployment", "Job"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                used.update(e["name"] for e in c.get("env", []) if "THIRDRING" in e["name"])
    used.update(re.findall(r"\b(THIRDRING_[A-Z0-9_]+)=", (DEPLOY / "Dockerfile").read_text()))
    # .env.example only feeds compose interpolation; these few are compose-only names.
    compose_only = {"THIRDRING_IMAGE", "THIRDRING_API_PUBLISH"}
    unknown = used - known - compose_only
    assert not unknown, f"no code reads {sorted(unknown)}"
    assert compose_only <= set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text()))
    assert (K8S / "kustomization.yaml").exists()


def test_migrate_command_runs_as_a_plain_process(tmp_path: Path) -> None:
    """The migrate service's command and environment, on SQLite instead of PostgreSQL."""
    svc = compose()["services"]["migrate"]
    env = {k: str(v) for k, v in svc["environment"].items()}
    env["THIRDRING_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'thirdring.db'}"
    env["THIRDRING_DATA_DIR"] = str(tmp_path)
    run_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **env}
    proc = subprocess.run(
        [str(BIN / "thirdring"), *svc["command"]],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "thirdring.db").stat().st_size > 0

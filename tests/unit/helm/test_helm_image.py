"""The Dockerfile builds the image the chart expects (no Docker engine here: read, not built)."""

from __future__ import annotations

import json
import re

import yaml
from helm_support import CHART

from fedrelay.adapters.devnet.toolchain import REPO_ROOT

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
DOCKERIGNORE = (REPO_ROOT / ".dockerignore").read_text().splitlines()


def _stages() -> list[str]:
    """The Dockerfile's build stages, each from its FROM line to the next."""
    parts = re.split(r"^(?=FROM )", DOCKERFILE, flags=re.MULTILINE)
    return [p for p in parts if p.startswith("FROM ")]


def _arg_default(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, flags=re.MULTILINE)
    assert match, f"ARG {name} has no default"
    return match.group(1)


def test_base_images_are_pinned_to_exact_versions() -> None:
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", _arg_default("PYTHON_IMAGE"))
    assert re.fullmatch(r"node:20\.\d+\.\d+-bookworm-slim", _arg_default("NODE_IMAGE"))
    for stage in _stages():
        image = next(word for word in stage.split()[1:] if not word.startswith("--"))
        assert image in {"${PYTHON_IMAGE}", "${NODE_IMAGE}"}, image
        assert "latest" not in image


def test_final_stage_is_lean_and_unprivileged() -> None:
    stages = _stages()
    assert len(stages) >= 3, "multi-stage: ABIs, build, runtime"
    final = stages[-1]
    assert "build-essential" not in final
    assert "apt-get install" not in final
    assert "COPY --from=build /opt/fedrelay/venv /opt/fedrelay/venv" in final
    user = re.search(r"^USER (\S+)$", final, flags=re.MULTILINE)
    assert user
    assert user.group(1) == "${UID}:${GID}"
    uid = int(_arg_default("UID"))
    assert uid >= 10000
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == uid
    assert values["containerSecurityContext"]["runAsUser"] == uid
    assert values["podSecurityContext"]["runAsGroup"] == int(_arg_default("GID"))


def test_entrypoint_is_the_fedrelay_command() -> None:
    (entry,) = re.findall(r"^ENTRYPOINT (.+)$", DOCKERFILE, flags=re.MULTILINE)
    assert json.loads(entry) == ["fedrelay"]
    final = _stages()[-1]
    assert "FEDRELAY_CONTRACTS_OUT=/opt/fedrelay/contracts/out" in final
    assert "FEDRELAY_HEALTH_PORT=8080" in final


def test_dependencies_come_from_the_lock_and_the_project_without_its_deps() -> None:
    build = next(s for s in _stages() if " AS build" in s.splitlines()[0])
    assert "--constraint requirements.lock" in build
    assert "pip install --no-deps ." in build
    assert "site}/migrations" in build, "the ledger's migrations must ship with the packages"


def test_every_copied_path_exists_and_is_sent_to_the_builder() -> None:
    kept = {line.lstrip("!").rstrip("/") for line in DOCKERIGNORE if line.startswith("!")}
    assert "**" in DOCKERIGNORE, ".dockerignore sends only what it lists"
    sources = []
    for line in DOCKERFILE.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    assert sources
    for source in sources:
        path = source.rstrip("/")
        assert (REPO_ROOT / path).exists(), f"COPY {source}: no such path"
        assert any(path == k or path.startswith(k + "/") for k in kept), f"{source} is ignored"

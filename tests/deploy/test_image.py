"""The image builds from the Dockerfile alone, and every command the deployments run exists.

No Docker engine runs here, so these check what a build and a start depend on: every file the
Dockerfile copies exists and is not excluded from the build context, the pinned lock covers the
project's dependencies, and every `repotalk ...` command in the Dockerfile, compose, Kubernetes and
ECS definitions is a command of the installed CLI (worker names included).
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pathspec
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from typer.testing import CliRunner

from libs.common.events import Service
from repotalk.cli import app
from repotalk.services import parse_service

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "deploy" / "docker" / "requirements.lock"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines: list[tuple[str, str]] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        current += " " + line.removesuffix("\\").strip() if current else line.removesuffix("\\").strip()
        if not line.endswith("\\"):
            word, _, rest = current.partition(" ")
            lines.append((word.upper(), rest.strip()))
            current = ""
    return lines


def _copy_sources() -> list[str]:
    sources = []
    for word, rest in _instructions():
        if word not in ("COPY", "ADD"):
            continue
        args = [a for a in shlex.split(rest) if not a.startswith("--")]
        if re.search(r"--from=", rest):
            continue  # copies from another build stage, not from the context
        sources += args[:-1]
    return sources


def _dockerignore() -> pathspec.GitIgnoreSpec:
    return pathspec.GitIgnoreSpec.from_lines((ROOT / ".dockerignore").read_text().splitlines())


def test_every_file_the_dockerfile_copies_exists_in_the_build_context() -> None:
    sources = _copy_sources()
    assert sources, "the Dockerfile copies nothing from the context"
    ignored = _dockerignore()
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: no such file in the build context"
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        kept = [f for f in files if not ignored.match_file(str(f.relative_to(ROOT)))]
        assert kept, f"COPY {source}: everything it names is excluded by .dockerignore"
        if path.is_file():
            assert kept == [path], f"COPY {source}: excluded by .dockerignore"


def test_the_build_context_holds_what_pip_install_needs() -> None:
    """`pip install .` needs pyproject's readme and every package setuptools is told to find."""
    sources = {s.rstrip("/") for s in _copy_sources()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "pyproject.toml" in sources and project["project"]["readme"] in sources
    for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert pattern.rstrip("*") in sources, f"package {pattern} is not copied into the image"


def test_the_lock_pins_every_runtime_dependency_within_its_range() -> None:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not pinned: {line}"
            pins[canonicalize_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    stale = []
    for spec in project["project"]["dependencies"]:
        req = Requirement(spec)
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None or not req.specifier.contains(pinned, prereleases=True):
            stale.append(f"{spec} (lock: {pinned})")
    assert not stale, "deploy/docker/requirements.lock is stale, run `.venv/bin/python deploy/docker/lock.py`: " + (
        ", ".join(stale)
    )


def test_the_image_runs_as_a_non_root_user_without_build_tools() -> None:
    stages: list[list[tuple[str, str]]] = []
    for word, rest in _instructions():
        if word == "FROM":
            stages.append([])
        stages[-1].append((word, rest))
    final = stages[-1]
    users = [rest for word, rest in final if word == "USER"]
    assert users and not users[-1].startswith(("0", "root")), "the final stage must run as a non-root user"
    installs = " ".join(rest for word, rest in final if word == "RUN")
    for tool in ("build-essential", "gcc", "g++", "python3-dev"):
        assert tool not in installs, f"{tool} in the final stage"


# ---- every command the deployments run --------------------------------------------------------------


def _dockerfile_commands() -> list[list[str]]:
    return [json.loads(rest) for word, rest in _instructions() if word in ("CMD", "ENTRYPOINT")]


def _compose_commands() -> list[list[str]]:
    commands = []
    for path in sorted(ROOT.glob("docker-compose*.yml")):
        services = yaml.safe_load(path.read_text()).get("services", {})
        for service in services.values():
            command = service.get("command")
            if service.get("image", "").startswith(("${REPOTALK_IMAGE", "repotalk")) or "build" in service:
                assert command, f"{path.name}: a repotalk service without an explicit command"
                commands.append(command)
    return commands


def _k8s_commands() -> list[list[str]]:
    commands = []
    for path in sorted((ROOT / "deploy" / "k8s").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            for container in _containers(doc):
                if str(container.get("image", "")).startswith("repotalk"):
                    commands.append(container["command"] + container.get("args", []))
    return commands


def _containers(doc: Any) -> list[dict[str, Any]]:
    if not isinstance(doc, dict) or doc.get("kind") not in ("Deployment", "StatefulSet", "Job"):
        return []
    spec = doc["spec"]["template"]["spec"]
    return list(spec.get("containers", [])) + list(spec.get("initContainers", []))


def _ecs_commands() -> list[list[str]]:
    text = (ROOT / "deploy" / "terraform" / "envs" / "ecs" / "main.tf").read_text()
    return [json.loads(f"[{m}]") for m in re.findall(r'command\s*=\s*\[("repotalk"[^\]]*)\]', text)]


ALL_COMMANDS = {
    "Dockerfile": _dockerfile_commands,
    "compose": _compose_commands,
    "kubernetes": _k8s_commands,
    "ecs": _ecs_commands,
}


def _cli_commands() -> set[str]:
    result = CliRunner().invoke(app, ["--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    names = ("serve", "gateway", "worker", "beat", "migrate", "rotate-keys", "index", "search")
    return {name for name in names if name in result.output}


def test_the_cli_offers_the_commands_the_deployments_run() -> None:
    assert {"gateway", "worker", "beat", "migrate", "rotate-keys"} <= _cli_commands()


@pytest.mark.parametrize("where", sorted(ALL_COMMANDS))
def test_every_command_run_exists_in_the_installed_cli(where: str) -> None:
    commands = ALL_COMMANDS[where]()
    assert commands, f"no repotalk command found in the {where} definitions"
    available = _cli_commands()
    for argv in commands:
        assert argv[0] == "repotalk", f"{where}: {argv} does not start the repotalk CLI"
        sub = argv[1]
        assert sub in available, f"{where}: `repotalk {sub}` is not a command of the CLI"
        result = CliRunner().invoke(app, [sub, "--help"])
        assert result.exit_code == 0, f"{where}: `repotalk {sub} --help` failed: {result.output}"
        if sub == "worker":
            assert len(argv) == 3, f"{where}: {argv}: a worker needs exactly one service"
            parse_service(argv[2])  # raises on an unknown service


@pytest.mark.parametrize("where", ["compose", "kubernetes", "ecs"])
def test_every_service_has_a_worker_and_there_is_a_gateway(where: str) -> None:
    commands = ALL_COMMANDS[where]()
    workers = {parse_service(argv[2]) for argv in commands if argv[1] == "worker"}
    assert workers == set(Service), f"{where}: workers for {sorted(s.value for s in workers)}"
    assert ["repotalk", "gateway"] in commands
    assert ["repotalk", "migrate"] in commands


def test_each_keda_trigger_watches_its_workers_queue() -> None:
    deployments = {}
    for path in (ROOT / "deploy" / "k8s" / "base").glob("worker-*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            for container in _containers(doc):
                deployments[doc["metadata"]["name"]] = parse_service(container["command"][2]).value
    path = ROOT / "deploy" / "k8s" / "components" / "keda" / "scaledobjects.yaml"
    scaled = {doc["spec"]["scaleTargetRef"]["name"]: doc for doc in yaml.safe_load_all(path.read_text())}
    assert set(scaled) == set(deployments)
    for name, doc in scaled.items():
        (trigger,) = doc["spec"]["triggers"]
        assert trigger["type"] == "redis"
        # Celery's queue for a service is a Redis list named after it.
        assert trigger["metadata"]["listName"] == deployments[name], name

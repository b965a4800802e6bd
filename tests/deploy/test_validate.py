"""`make validate` passes on the tree and fails when a deployment file is broken.

Each check runs deploy/validate.py (what `make validate` runs) on the real tree, then on a copy with
one thing broken, and expects the failure to be reported.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deploy.conftest import needs_checkov, needs_kubectl, needs_terraform, run_validate

TreeCopy = Callable[..., Path]


def _assert_fails(result: object, *needles: str) -> None:
    out = result.stdout + result.stderr  # type: ignore[attr-defined]
    assert result.returncode == 1, out  # type: ignore[attr-defined]
    assert "FAIL" in out
    for needle in needles:
        assert needle in out, out


def _edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert text.count(old) >= count, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, count))


def test_compose_and_yaml_files_are_valid() -> None:
    result = run_validate("compose", "yamllint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   compose" in result.stdout and "ok   yamllint" in result.stdout


def test_a_compose_file_with_an_invalid_value_fails(tree_copy: TreeCopy) -> None:
    root = tree_copy("docker-compose.yml", ".yamllint")
    _edit(root / "docker-compose.yml", "condition: service_completed_successfully", "condition: service_finished")
    _assert_fails(run_validate("compose", root=root), "FAIL compose")


def test_badly_indented_yaml_fails_yamllint(tree_copy: TreeCopy) -> None:
    root = tree_copy("docker-compose.yml", ".yamllint", "deploy/k8s")
    path = root / "deploy" / "k8s" / "base" / "ingress.yaml"
    _edit(path, "  ingressClassName: nginx", "  ingressClassName:   nginx   ")
    _assert_fails(run_validate("yamllint", root=root), "FAIL yamllint", "trailing-spaces")


@needs_kubectl
def test_every_overlay_renders_and_validates() -> None:
    result = run_validate("k8s")
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if " k8s " in x)
    # Both overlays rendered; eks carries the KEDA and External Secrets custom resources.
    assert re.search(r"dev \d+ objects", line) and re.search(r"eks \d+ objects \([1-9]\d* custom\)", line), line


@needs_kubectl
def test_a_deployment_without_its_required_selector_fails(tree_copy: TreeCopy) -> None:
    root = tree_copy("deploy/k8s")
    path = root / "deploy" / "k8s" / "base" / "worker-processor.yaml"
    _edit(path, "  selector:\n    matchLabels:\n      app: worker-processor\n", "")
    _assert_fails(run_validate("k8s", root=root), "FAIL k8s", "'selector' is a required property")


@needs_kubectl
def test_an_unknown_field_fails_in_strict_mode(tree_copy: TreeCopy) -> None:
    root = tree_copy("deploy/k8s")
    _edit(root / "deploy" / "k8s" / "base" / "gateway.yaml", "periodSeconds: 10", "periodSecond: 10")
    _assert_fails(run_validate("k8s", root=root), "FAIL k8s", "periodSecond")


@needs_kubectl
def test_a_scaled_object_without_its_list_name_fails(tree_copy: TreeCopy) -> None:
    root = tree_copy("deploy/k8s")
    _edit(root / "deploy" / "k8s" / "components" / "keda" / "scaledobjects.yaml", "        listName: processor\n", "")
    _assert_fails(run_validate("k8s", root=root), "FAIL k8s", "ScaledObject worker-processor", "'listName'")


@needs_kubectl
def test_a_custom_resource_without_a_schema_fails(tree_copy: TreeCopy) -> None:
    root = tree_copy("deploy/k8s")
    (root / "deploy" / "k8s" / "schemas" / "external-secrets.io_v1_externalsecret.json").unlink()
    _assert_fails(run_validate("k8s", root=root), "FAIL k8s", "ExternalSecret")


@needs_kubectl
def test_a_broken_kustomization_fails(tree_copy: TreeCopy) -> None:
    root = tree_copy("deploy/k8s")
    _edit(root / "deploy" / "k8s" / "base" / "kustomization.yaml", "  - migrate-job.yaml\n", "  - missing.yaml\n")
    _assert_fails(run_validate("k8s", root=root), "FAIL k8s", "kustomize failed")


@needs_terraform
def test_terraform_is_formatted_and_complete() -> None:
    result = run_validate("terraform")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_terraform
def test_unformatted_or_unparsable_terraform_fails(tree_copy: TreeCopy) -> None:
    root = tree_copy("deploy/terraform")
    main = root / "deploy" / "terraform" / "envs" / "ecs" / "main.tf"
    _edit(main, "module \"alb\" {", "module \"alb\" {{")
    _assert_fails(run_validate("terraform", root=root), "FAIL terraform")


@needs_terraform
def test_an_environment_missing_a_required_file_fails(tree_copy: TreeCopy) -> None:
    root = tree_copy("deploy/terraform")
    (root / "deploy" / "terraform" / "envs" / "eks" / "outputs.tf").unlink()
    _assert_fails(run_validate("terraform", root=root), "FAIL terraform", "eks/outputs.tf")


@pytest.mark.slow
@needs_checkov
@needs_kubectl
def test_checkov_finds_no_failed_check() -> None:
    result = run_validate("checkov")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout


@pytest.mark.slow
@needs_checkov
@needs_kubectl
def test_checkov_fails_on_a_writable_root_filesystem(tree_copy: TreeCopy) -> None:
    root = tree_copy("deploy", "Dockerfile")
    gateway = root / "deploy" / "k8s" / "base" / "gateway.yaml"
    _edit(gateway, "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false")
    _assert_fails(run_validate("checkov", root=root), "FAIL checkov", "CKV_K8S_22")


@pytest.mark.slow
@needs_checkov
@needs_kubectl
def test_checkov_refuses_a_skip_without_a_reason(tree_copy: TreeCopy) -> None:
    root = tree_copy("deploy", "Dockerfile")
    gateway = root / "deploy" / "k8s" / "base" / "gateway.yaml"
    # The same skip, its reason moved out of the annotation.
    _edit(gateway, "checkov.io/skip1: CKV_K8S_43=The tag", "checkov.io/skip1: CKV_K8S_43\n    x-note: The tag")
    _assert_fails(run_validate("checkov", root=root), "FAIL checkov", "skipped without a reason")

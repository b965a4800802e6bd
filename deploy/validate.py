"""Validate the deployment files offline: what `make validate` (and CI) runs.

Checks, each reported on one line, the whole run failing if any fails:

  compose    every docker-compose*.yml against the Compose Specification schema (check-jsonschema)
  yamllint   the compose files and every YAML file under deploy/ (.yamllint)
  k8s        every kustomize overlay rendered (kubectl kustomize) and validated against the Kubernetes
             1.31 schemas in strict mode (kubernetes-validate); custom resources against deploy/k8s/schemas
  terraform  `terraform fmt -check -recursive` over deploy/terraform (also catches HCL syntax errors,
             which checkov would silently skip)
  checkov    Terraform, the rendered manifests and the Dockerfile: no failed check; skips are written
             beside the resource with their reason
  observability  deploy/observability: the Grafana dashboards' JSON (uids, datasources, queries), the
             provisioned datasources, the Prometheus scrape targets and the OTel collector's pipelines

    python deploy/validate.py                      # everything
    python deploy/validate.py --only k8s,compose   # some checks
    python deploy/validate.py --root /tmp/copy     # another tree (the tests validate broken copies)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

K8S_VERSION = "1.31"
CHECKS = ("compose", "yamllint", "k8s", "terraform", "checkov", "observability")
BIN = Path(sys.executable).parent


@dataclass
class Result:
    ok: bool
    summary: str
    detail: str = ""


class Context:
    def __init__(self, root: Path, checkov: str | None, workdir: Path) -> None:
        self.root = root
        self.checkov = checkov
        self.workdir = workdir
        self.rendered: dict[str, Path] = {}

    @property
    def overlays(self) -> list[Path]:
        base = self.root / "deploy" / "k8s" / "overlays"
        return sorted(p for p in base.iterdir() if (p / "kustomization.yaml").is_file()) if base.is_dir() else []

    @property
    def compose_files(self) -> list[Path]:
        return sorted(self.root.glob("docker-compose*.yml"))


def tool(name: str) -> str | None:
    """A command from this virtualenv first (check-jsonschema, yamllint, ...), then from PATH."""
    local = BIN / name
    return str(local) if local.exists() else shutil.which(name)


def run(cmd: list[str], cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=True, text=True, check=False)


def missing(*names: str) -> Result | None:
    absent = [n for n in names if tool(n) is None]
    return Result(False, f"not installed: {', '.join(absent)}") if absent else None


def check_compose(ctx: Context) -> Result:
    if (problem := missing("check-jsonschema")) is not None:
        return problem
    files = ctx.compose_files
    if not files:
        return Result(False, "no docker-compose*.yml found")
    done = run([tool("check-jsonschema") or "", "--builtin-schema", "vendor.compose-spec", *map(str, files)])
    names = ", ".join(f.name for f in files)
    if done.returncode != 0:
        return Result(False, f"{names}: invalid", done.stdout + done.stderr)
    return Result(True, f"{names}: valid against the Compose Specification")


def check_yamllint(ctx: Context) -> Result:
    if (problem := missing("yamllint")) is not None:
        return problem
    targets = [str(f) for f in ctx.compose_files] + [str(ctx.root / "deploy")]
    done = run([tool("yamllint") or "", "-c", str(ctx.root / ".yamllint"), "-f", "parsable", "-s", *targets],
               cwd=ctx.root)
    if done.returncode != 0:
        problems = done.stdout.strip().splitlines()
        return Result(False, f"{len(problems)} problem(s)", done.stdout + done.stderr)
    return Result(True, "compose files and deploy/**/*.yaml are clean")


def _documents(text: str) -> Iterator[dict[str, object]]:
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict):
            yield doc


def _crd_schemas(root: Path) -> dict[tuple[str, str], dict[str, object]]:
    schemas = {}
    for path in sorted((root / "deploy" / "k8s" / "schemas").glob("*.json")):
        schema = json.loads(path.read_text())
        props = schema["properties"]
        schemas[(props["apiVersion"]["const"], props["kind"]["const"])] = schema
    return schemas


def check_k8s(ctx: Context) -> Result:
    if (problem := missing("kubectl", "kubernetes-validate")) is not None:
        return problem
    import jsonschema

    overlays = ctx.overlays
    if not overlays:
        return Result(False, "no overlay under deploy/k8s/overlays")
    schemas = _crd_schemas(ctx.root)
    failures: list[str] = []
    counts = []
    for overlay in overlays:
        built = run(["kubectl", "kustomize", str(overlay)])
        if built.returncode != 0:
            failures.append(f"{overlay.name}: kustomize failed:\n{built.stderr.strip()}")
            continue
        out = ctx.workdir / f"k8s-{overlay.name}.yaml"
        out.write_text(built.stdout)
        ctx.rendered[overlay.name] = out
        docs = list(_documents(built.stdout))
        builtin = [d for d in docs if (d.get("apiVersion"), d.get("kind")) not in schemas]
        custom = [d for d in docs if (d.get("apiVersion"), d.get("kind")) in schemas]
        # Built-in kinds: kubernetes-validate, strict (unknown fields are errors). It only warns about
        # kinds it has no schema for, so an unknown custom resource is an error here instead.
        stream = yaml.safe_dump_all(builtin, sort_keys=False)
        validated = run([tool("kubernetes-validate") or "", "--strict", "-k", K8S_VERSION, "--quiet", "-"],
                        stdin=stream)
        report = (validated.stdout + validated.stderr).strip()
        if validated.returncode != 0 or "ERROR" in report:
            failures.append(f"{overlay.name}: {report}")
        unknown = [line for line in report.splitlines() if "Couldn't find schema" in line]
        if unknown:
            failures.append(f"{overlay.name}: no schema (add one to deploy/k8s/schemas):\n" + "\n".join(unknown))
        for doc in custom:
            schema = schemas[(str(doc["apiVersion"]), str(doc["kind"]))]
            for error in jsonschema.Draft202012Validator(schema).iter_errors(doc):
                where = "/".join(str(p) for p in error.absolute_path) or "(root)"
                metadata = doc.get("metadata")
                name = metadata.get("name", "?") if isinstance(metadata, dict) else "?"
                failures.append(f"{overlay.name}: {doc['kind']} {name}: {where}: {error.message}")
        counts.append(f"{overlay.name} {len(docs)} objects ({len(custom)} custom)")
    if failures:
        return Result(False, f"{len(failures)} problem(s)", "\n".join(failures))
    return Result(True, f"Kubernetes {K8S_VERSION} strict: " + ", ".join(counts))


def check_terraform(ctx: Context) -> Result:
    if (problem := missing("terraform")) is not None:
        return problem
    tf = ctx.root / "deploy" / "terraform"
    envs = sorted(p.name for p in (tf / "envs").iterdir() if p.is_dir()) if (tf / "envs").is_dir() else []
    if not envs:
        return Result(False, "no environment under deploy/terraform/envs")
    required = ("main.tf", "variables.tf", "outputs.tf", "versions.tf")
    incomplete = [f"{env}/{name}" for env in envs for name in required if not (tf / "envs" / env / name).is_file()]
    if incomplete:
        return Result(False, "missing " + ", ".join(incomplete))
    done = run(["terraform", "fmt", "-check", "-recursive", "-diff", str(tf)])
    if done.returncode != 0:
        return Result(False, "not formatted or not valid HCL (run `terraform fmt -recursive deploy/terraform`)",
                      done.stdout + done.stderr)
    return Result(True, f"terraform fmt: {', '.join(envs)} formatted and parse")


def _checkov(ctx: Context, label: str, args: list[str]) -> tuple[str, list[str]]:
    # Not --quiet: it drops the skipped checks from the report, and each skip must carry a reason.
    done = run([ctx.checkov or "", *args, "--skip-download", "--output", "json"], cwd=ctx.root)
    try:
        data = json.loads(done.stdout)
    except json.JSONDecodeError:
        return f"{label}: no report", [f"{label}: checkov printed no JSON:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"]
    reports = data if isinstance(data, list) else [data]
    passed = failed = skipped = resources = errors = 0
    problems = []
    for report in reports:
        summary = report.get("summary", {})
        passed += summary.get("passed", 0)
        failed += summary.get("failed", 0)
        skipped += summary.get("skipped", 0)
        resources += summary.get("resource_count", 0)
        errors += summary.get("parsing_errors", 0)
        for check in report.get("results", {}).get("failed_checks", []):
            problems.append(f"{label}: {check['check_id']} {check['check_name']} -- {check['resource']} "
                            f"({check.get('file_path', '')}:{check.get('file_line_range', [''])[0]})")
        for check in report.get("results", {}).get("skipped_checks", []):
            reason = check.get("suppress_comment") or check.get("check_result", {}).get("suppress_comment") or ""
            if not reason.strip() or reason.strip() == "No comment provided":
                problems.append(f"{label}: {check['check_id']} skipped without a reason -- {check['resource']}")
    # checkov exits 0 when it cannot parse a file: an empty or unparsed scan is a failure here.
    if errors:
        problems.append(f"{label}: {errors} file(s) could not be parsed")
    if resources == 0 and passed == 0:
        problems.append(f"{label}: nothing was scanned")
    return f"{label} {passed} passed, {failed} failed, {skipped} skipped", problems


def check_checkov(ctx: Context) -> Result:
    if not ctx.checkov or not Path(ctx.checkov).exists():
        return Result(False, "checkov not installed (make validate installs it into .venv/checkov)")
    if not ctx.rendered:
        check_k8s(ctx)
    summaries, problems = [], []
    scans = [
        ("terraform", ["-d", str(ctx.root / "deploy" / "terraform"), "--framework", "terraform"]),
        ("dockerfile", ["-f", str(ctx.root / "Dockerfile"), "--framework", "dockerfile"]),
    ]
    for name, path in sorted(ctx.rendered.items()):
        scans.append((f"k8s/{name}", ["-f", str(path), "--framework", "kubernetes"]))
    for label, args in scans:
        summary, found = _checkov(ctx, label, args)
        summaries.append(summary)
        problems += found
    if problems:
        return Result(False, "; ".join(summaries), "\n".join(problems))
    return Result(True, "; ".join(summaries))


def _observability_problems(root: Path) -> tuple[list[str], str]:
    base = root / "deploy" / "observability"
    problems: list[str] = []
    datasources_file = base / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
    try:
        datasources = yaml.safe_load(datasources_file.read_text()).get("datasources", [])
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        return [f"{datasources_file.relative_to(root)}: {exc}"], ""
    uids = {d.get("uid") for d in datasources if isinstance(d, dict)}
    for wanted in ("prometheus", "jaeger"):
        if wanted not in uids:
            problems.append(f"datasources: no datasource with the fixed uid {wanted!r}")
    for d in datasources:
        for link in (d.get("jsonData") or {}).get("exemplarTraceIdDestinations", []):
            if link.get("datasourceUid") not in uids:
                problems.append(f"datasource {d.get('uid')}: exemplars link to unknown uid "
                                f"{link.get('datasourceUid')!r}")
    dashboards = sorted((base / "grafana" / "dashboards").glob("*.json"))
    if not dashboards:
        problems.append("no dashboard under deploy/observability/grafana/dashboards")
    seen: dict[str, str] = {}
    queries = 0
    for path in dashboards:
        try:
            board = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            problems.append(f"{path.name}: not JSON: {exc}")
            continue
        uid, title = board.get("uid"), board.get("title")
        if not uid or not title:
            problems.append(f"{path.name}: a dashboard needs a uid and a title")
        elif uid in seen:
            problems.append(f"{path.name}: uid {uid!r} already used by {seen[uid]}")
        else:
            seen[uid] = path.name
        for panel in _panels(board.get("panels", [])):
            if panel.get("type") == "row":
                continue
            ds = (panel.get("datasource") or {}).get("uid")
            if ds not in uids:
                problems.append(f"{path.name}: panel {panel.get('title')!r} uses unknown datasource {ds!r}")
            targets = panel.get("targets") or []
            if not targets:
                problems.append(f"{path.name}: panel {panel.get('title')!r} has no query")
            for target in targets:
                target_ds = (target.get("datasource") or {}).get("uid", ds)
                if target_ds not in uids:
                    problems.append(f"{path.name}: a query of {panel.get('title')!r} uses unknown datasource "
                                    f"{target_ds!r}")
                if not str(target.get("expr", "")).strip():
                    problems.append(f"{path.name}: a query of {panel.get('title')!r} is empty")
                elif str(target["expr"]).count("(") != str(target["expr"]).count(")"):
                    problems.append(f"{path.name}: unbalanced parentheses in {target['expr']!r}")
                queries += 1
    services = _compose_services(root)
    prometheus_file = base / "prometheus" / "prometheus.yml"
    try:
        prometheus = yaml.safe_load(prometheus_file.read_text())
        for job in prometheus.get("scrape_configs", []):
            for static in job.get("static_configs", []):
                for target in static.get("targets", []):
                    host = str(target).rsplit(":", 1)[0]
                    if services and host not in services:
                        problems.append(f"prometheus.yml: job {job.get('job_name')} scrapes {target}, "
                                        "not a compose service")
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        problems.append(f"{prometheus_file.relative_to(root)}: {exc}")
    collector_file = base / "otel-collector" / "config.yaml"
    try:
        collector = yaml.safe_load(collector_file.read_text())
        for name, pipeline in collector["service"]["pipelines"].items():
            for kind in ("receivers", "processors", "exporters"):
                for component in pipeline.get(kind, []):
                    if component not in (collector.get(kind) or {}):
                        problems.append(f"otel collector: pipeline {name} uses undefined {kind[:-1]} {component!r}")
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        problems.append(f"{collector_file.relative_to(root)}: {exc!r}")
    return problems, f"{len(dashboards)} dashboards, {queries} queries, datasources {sorted(u for u in uids if u)}"


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        nested = panel.get("panels")
        if isinstance(nested, list):
            yield from _panels(nested)


def _compose_services(root: Path) -> set[str]:
    names: set[str] = set()
    for path in sorted(root.glob("docker-compose*.yml")):
        try:
            names |= set((yaml.safe_load(path.read_text()) or {}).get("services", {}))
        except yaml.YAMLError:
            continue
    return names


def check_observability(ctx: Context) -> Result:
    problems, summary = _observability_problems(ctx.root)
    if problems:
        return Result(False, f"{len(problems)} problem(s)", "\n".join(problems))
    return Result(True, summary)


RUNNERS: dict[str, Callable[[Context], Result]] = {
    "compose": check_compose,
    "yamllint": check_yamllint,
    "k8s": check_k8s,
    "terraform": check_terraform,
    "checkov": check_checkov,
    "observability": check_observability,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated subset of {', '.join(CHECKS)}")
    parser.add_argument("--checkov", default=os.environ.get("CHECKOV"), help="the checkov executable")
    args = parser.parse_args(argv)
    wanted = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in RUNNERS]
    if unknown:
        parser.error(f"unknown check(s): {', '.join(unknown)}")
    failed = 0
    with tempfile.TemporaryDirectory(prefix="repotalk-validate-") as tmp:
        ctx = Context(args.root.resolve(), args.checkov or tool("checkov"), Path(tmp))
        for name in wanted:
            started = time.monotonic()
            result = RUNNERS[name](ctx)
            mark = "ok  " if result.ok else "FAIL"
            print(f"{mark} {name:<9} {result.summary} ({time.monotonic() - started:.1f}s)", flush=True)
            if not result.ok:
                failed += 1
                if result.detail:
                    print("     " + result.detail.strip().replace("\n", "\n     "), flush=True)
    print(f"validate: {len(wanted) - failed} of {len(wanted)} checks passed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

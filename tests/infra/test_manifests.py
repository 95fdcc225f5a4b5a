"""infra/ manifests parse, and every entry point and setting they name exists in the code."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in sorted(INFRA.rglob("*.yaml")) for d in docs(p)]


def cli_commands() -> set[str]:
    from edgemine.jobs.cli import app

    names = {c.name for c in app.registered_commands}
    return names | {g.name for g in app.registered_groups}


def test_every_manifest_parses_and_names_its_kind() -> None:
    found = all_docs()
    kinds = {d["kind"] for _, d in found}
    assert {"RayCluster", "RayJob", "SparkApplication", "Deployment", "StatefulSet", "Service", "Secret",
            "Kustomization"} <= kinds
    for path, d in found:
        assert "apiVersion" in d and "kind" in d, path


def test_rayjob_runs_a_real_command_on_a_spec_that_validates(tmp_path: Path) -> None:
    from edgemine.jobs.spec import build_spec

    found = {d["kind"]: d for d in docs(INFRA / "kuberay" / "rayjob-mine.yaml")}
    argv = shlex.split(found["RayJob"]["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "edgemine"] and (ROOT / "edgemine" / "__main__.py").exists()
    assert argv[3] in cli_commands()
    spec_path = argv[4]
    mount = found["RayJob"]["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert any(spec_path.startswith(v["mountPath"]) for v in mount["volumeMounts"])
    spec = build_spec(yaml.safe_load(found["ConfigMap"]["data"]["job.yaml"]), source="rayjob")
    assert spec.device == "cuda" and spec.budget > 0


def test_ray_worker_groups_have_cpu_and_gpu() -> None:
    for path in (INFRA / "kuberay" / "raycluster.yaml", INFRA / "kuberay" / "rayjob-mine.yaml"):
        for d in docs(path):
            if d["kind"] not in ("RayCluster", "RayJob"):
                continue
            spec = d["spec"].get("rayClusterSpec", d["spec"])
            groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
            gpu = groups["gpu-workers"]["template"]["spec"]["containers"][0]
            assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1" and gpu["image"] == "edgemine:cuda"
            assert groups["cpu-workers"]["template"]["spec"]["containers"][0]["image"] == "edgemine:cpu"


def test_spark_application_runs_the_cli_from_the_image_layout() -> None:
    from edgemine.jobs.spec import build_spec

    found = {d["kind"]: d for d in docs(INFRA / "spark" / "spark-application.yaml")}
    app = found["SparkApplication"]["spec"]
    main = app["mainApplicationFile"].removeprefix("local://")
    workdir = re.search(r"^WORKDIR (\S+)", (INFRA / "docker" / "Dockerfile.cpu").read_text(), re.M).group(1)
    assert main.startswith(workdir) and (ROOT / main[len(workdir) + 1:]).exists()
    assert app["arguments"][0] in cli_commands()
    spec = build_spec(yaml.safe_load(found["ConfigMap"]["data"]["job.yaml"]), source="spark-application")
    assert spec.spark.master.startswith("k8s://")
    rbac = {d["kind"]: d for d in docs(INFRA / "spark" / "spark-on-k8s.yaml")}
    assert app["driver"]["serviceAccount"] == rbac["ServiceAccount"]["metadata"]["name"]


def test_review_deployment_uses_real_settings_and_commands() -> None:
    from edgemine.review_api.settings import Settings

    fields = set(Settings.model_fields)
    dep = next(d for d in docs(INFRA / "k8s" / "review" / "review-api.yaml") if d["kind"] == "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][:2] == ["edgemine", "serve"] and "serve" in cli_commands()
    for env in c["env"]:
        assert env["name"].startswith("EDGEMINE_")
        assert env["name"].removeprefix("EDGEMINE_").lower() in fields, env["name"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
    from edgemine.review_api.app import create_app  # noqa: F401 - the app the command serves exists
    kust = yaml.safe_load((INFRA / "k8s" / "review" / "kustomization.yaml").read_text())
    for res in kust["resources"]:
        assert (INFRA / "k8s" / "review" / res).exists()
    secret = docs(INFRA / "k8s" / "review" / "secret.yaml")[0]
    ref = next(e for e in c["env"] if e["name"] == "EDGEMINE_DATABASE_URL")["valueFrom"]["secretKeyRef"]
    assert ref["key"] in secret["stringData"] and secret["stringData"][ref["key"]].startswith("postgresql://")


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfiles_copy_real_paths_and_bound_torch(dockerfile: str) -> None:
    text = (INFRA / "docker" / dockerfile).read_text()
    for src in re.findall(r"^COPY (\S+(?: \S+)*) \S+$", text, re.M):
        for part in src.split():
            assert (ROOT / part).exists(), part
    assert '"torch>=2.2,<2.14"' in text
    assert "edgemine" in re.search(r"^CMD (.+)$", text, re.M).group(1)
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "edgemine" in scripts

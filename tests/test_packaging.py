"""One import root: what the wheel holds, the package list, the layers and the Ray package tree."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("mining", "embeddings", "review_api", "jobs")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _load_script():  # noqa: ANN202 - the scripts/check_layers.py module
    spec = importlib.util.spec_from_file_location("check_layers", ROOT / "scripts" / "check_layers.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_package_list_is_every_folder_with_an_init() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {"edgemine"} | {
        "edgemine." + ".".join(init.parent.relative_to(ROOT).parts)
        for folder in FOLDERS for init in (ROOT / folder).rglob("__init__.py") if "__pycache__" not in init.parts
    }
    assert listed == found


def test_the_core_contract_names_every_core_module() -> None:
    (core,) = [c for c in PYPROJECT["tool"]["importlinter"]["contracts"] if c["name"].startswith("the core")]
    modules = {f"edgemine.{p.stem}" for p in (ROOT / "edgemine").glob("*.py") if p.stem not in {"__init__", "__main__"}}
    assert set(core["source_modules"]) == modules


def test_the_core_package_imports_nothing_at_import_time() -> None:
    tree = ast.parse((ROOT / "edgemine" / "__init__.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]


@pytest.mark.integration
def test_the_wheel_holds_only_edgemine_with_every_module(tmp_path: Path) -> None:
    script = _load_script()
    wheel = script.build_wheel(tmp_path)
    assert script.wheel_problems(wheel) == []
    tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"edgemine"}
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"edgemine/review_api/static/index.html", "edgemine/jobs/specs/example.yaml",
            "edgemine/mining/log4j2.properties", "edgemine/__main__.py"} <= names


@pytest.mark.integration
def test_the_layer_check_passes_and_catches_mining_importing_jobs(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_layers.py")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    probe = ROOT / "mining" / "_layer_probe_test.py"
    probe.write_text("from edgemine.jobs.spec import load_spec  # noqa: F401\n")
    try:
        bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_layers.py")], capture_output=True,
                             text=True)
    finally:
        probe.unlink()
    assert bad.returncode == 1
    assert "edgemine.mining._layer_probe_test -> edgemine.jobs.spec" in bad.stdout


def test_python_dash_m_edgemine_is_the_cli(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "edgemine", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and "Usage: edgemine" in out.stdout and "mine" in out.stdout


def test_the_ray_package_tree_is_the_installed_layout_and_wins_on_sys_path(tmp_path: Path) -> None:
    from edgemine.jobs.submit import package_tree

    root = package_tree(tmp_path / "pkg")
    assert root == tmp_path / "pkg" / "edgemine"
    for rel in ("errors.py", "mining/index.py", "embeddings/pipeline.py", "review_api/static/index.html",
                "jobs/cli.py", "jobs/synth/world.py"):
        assert (root / rel).is_file(), rel
    assert not list(root.rglob("__pycache__"))
    code = "import edgemine.mining.index as m, edgemine.jobs.cli as c; print(m.__file__); print(c.__file__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(tmp_path / "pkg"), "PATH": "/usr/bin:/bin"}, check=True)
    assert all(line.startswith(str(root)) for line in out.stdout.split())


def test_no_test_module_imports_another_test_module_or_a_conftest() -> None:
    offenders = []
    for path in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tests."):
                last = node.module.rsplit(".", 1)[-1]
                if last == "conftest" or last.startswith("test_"):
                    offenders.append(f"{path.relative_to(ROOT)}: from {node.module}")
    assert offenders == []

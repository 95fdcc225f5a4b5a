"""Build the wheel, check what it holds, and check the package layers on the installed layout.

    python scripts/check_layers.py [--mypy]

1. `pip wheel --no-deps .`: the wheel must hold only `edgemine/` (and its dist-info), with every module of the
   design card's folders (`mining/`, `embeddings/`, `review_api/`, `jobs/`) beneath it.
2. import-linter (`[tool.importlinter]` in pyproject.toml) on the unpacked wheel: the folders are mapped into
   `edgemine.*` by setuptools' package-dir, which an editable install resolves with an import hook that static
   tools cannot follow, so the checks read the layout users install.
3. `--mypy`: mypy over the same unpacked tree.

Exit status 1 with the broken contract or the stray file named. `make lint` runs it (with --mypy) and `make test`
runs it without.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"mining": "edgemine/mining", "embeddings": "edgemine/embeddings", "review_api": "edgemine/review_api",
           "jobs": "edgemine/jobs", "edgemine": "edgemine"}


def build_wheel(out: Path) -> Path:
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # setuptools builds in ROOT/build; stale files would ship
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(out), str(ROOT)], check=True, cwd=out)
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    (wheel,) = out.glob("edgemine-*.whl")
    return wheel


def wheel_problems(wheel: Path) -> list[str]:
    names = zipfile.ZipFile(wheel).namelist()
    problems = [f"{n}: outside edgemine/" for n in names
                if not n.startswith("edgemine/") and not n.split("/")[0].endswith(".dist-info")]
    held = set(names)
    for folder, dest in FOLDERS.items():
        for py in sorted((ROOT / folder).rglob("*.py")):
            if "__pycache__" in py.parts:
                continue
            want = f"{dest}/{py.relative_to(ROOT / folder).as_posix()}"
            if want not in held:
                problems.append(f"{folder}/{py.relative_to(ROOT / folder).as_posix()}: not in the wheel as {want}")
    return problems


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="edgemine-layers-") as tmp_s:
        tmp = Path(tmp_s)
        wheel = build_wheel(tmp)
        problems = wheel_problems(wheel)
        for p in problems:
            print(f"wheel: {p}", file=sys.stderr)
        site = tmp / "site"
        zipfile.ZipFile(wheel).extractall(site)
        # cwd = the temp folder, so the checkout's own folders are not importable as top-level packages
        env = {**os.environ, "PYTHONPATH": str(site)}
        bindir = Path(sys.executable).parent
        rc = subprocess.run([str(bindir / "lint-imports"), "--no-cache", str(ROOT / "pyproject.toml")],
                            cwd=tmp, env=env).returncode
        if "--mypy" in argv:
            rc |= subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                                  "--cache-dir", str(ROOT / ".mypy_cache"), "-p", "edgemine"],
                                 cwd=tmp, env={**env, "MYPYPATH": str(site)}).returncode
        return 1 if problems or rc else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""One import name, ``hwprune``: no code of ours imports the repository's folders by their
bare names, and the wheel holds nothing else. That a user's own profiler.py or synth.py
cannot shadow hwprune is shown by tests/test_api.py, which runs the README's example (every
subpackage) from a directory holding such files."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("profiler", "luts", "pruner", "synth", "zoo")


def _python_files() -> list[Path]:
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True,
                             text=True).stdout.split()
    return [ROOT / f for f in tracked] or sorted(ROOT.glob("**/*.py"))


def test_no_code_imports_a_bare_folder_name():
    bad = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and \
                node.module else []
            bad += [f"{path.relative_to(ROOT)}: {n}" for n in names
                    if n.split(".")[0] in FOLDERS]
    assert not bad, bad


def test_the_bare_names_are_not_importable_outside_the_repository(tmp_path):
    for name in FOLDERS:
        run = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path,
                             capture_output=True, text=True)
        assert run.returncode == 1 and "ModuleNotFoundError" in run.stderr, (name, run.stderr)


def test_the_wheel_holds_exactly_one_top_level_name(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for item in ("setup.cfg", "pyproject.toml", "README.md", "hwprune", *FOLDERS[:-1]):
        copy = shutil.copytree if (ROOT / item).is_dir() else shutil.copy
        copy(ROOT / item, src / item, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                         if (ROOT / item).is_dir() else {}))
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "--no-build-isolation", "-q", str(src), "-w", str(tmp_path / "w")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    names = zipfile.ZipFile(next((tmp_path / "w").glob("*.whl"))).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"hwprune"}
    for sub in ("profiler", "luts", "pruner", "synth", "zoo"):
        assert f"hwprune/{sub}/__init__.py" in names, sub

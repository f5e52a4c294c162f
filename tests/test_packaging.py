"""The package metadata agrees with the lock files, and the project imports without path tricks."""
import subprocess
import sys
import tomllib

from config import ROOT


def pins(path: str) -> list[str]:
    """The `name==version` lines of a requirements file, without comments."""
    with open(f"{ROOT}/{path}") as requirements:
        return [line.split("#")[0].strip() for line in requirements if line.split("#")[0].strip()]


def test_pyproject_dependencies_are_the_pins_the_makefile_installs():
    with open(f"{ROOT}/pyproject.toml", "rb") as pyproject:
        project = tomllib.load(pyproject)["project"]
    assert project["dependencies"] == pins("requirements.txt")
    assert project["optional-dependencies"]["test"] == pins("requirements-test.txt")


def test_the_project_imports_from_any_folder(tmp_path):
    """The venv holds the project itself (editable), so processes started elsewhere find it."""
    run = subprocess.run([sys.executable, "-c", "import config, worker, jobs.tasks, webapp, scripts.run"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr

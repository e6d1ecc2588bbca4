"""The package installs with its metadata and works from outside the repository."""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_the_package_dependencies_are_the_requirements():
  project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
  requirements = [l for l in (ROOT / "requirements.txt").read_text().splitlines() if l.strip()]
  assert project["dependencies"] == requirements
  tests = [l for l in (ROOT / "requirements-test.txt").read_text().splitlines() if l.strip()]
  assert project["optional-dependencies"]["test"] == tests


@pytest.mark.slow
def test_an_installed_package_runs_the_readme_snippet_outside_the_repository(tmp_path):
  target, source = tmp_path / "site", tmp_path / "source"  # pip builds in the source tree
  shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
      ".git", ".venv", "runs", "build", "*.egg-info", "docs", "__pycache__"))
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                  "--target", str(target), str(source)], check=True, capture_output=True)
  assert (target / "smjax" / "models" / "wide_resnet.py").exists()
  assert (target / "bin" / "smjax-report").exists() and (target / "bin" / "smjax-inspect").exists()
  snippet = re.findall(r"```python\n(.*?)```", README, re.S)[0]
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  out = subprocess.run([sys.executable, "-c", snippet], cwd=elsewhere, capture_output=True,
                       text=True, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin",
                                       "JAX_PLATFORMS": "cpu"}, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  assert re.search(r"test accuracy 0\.\d+", out.stdout)
  imported = subprocess.run([sys.executable, "-c", "import smjax; print(smjax.__file__)"],
                            cwd=elsewhere, capture_output=True, text=True,
                            env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
  assert imported.stdout.startswith(str(target))

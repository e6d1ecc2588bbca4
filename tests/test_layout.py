"""The layout: `import smjax` is cheap and lazy, no import cycles, every documented command exists."""

import ast
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = ("smjax", "experiments", "benchmarks")


def module_name(path: Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
  """Every import of the project's own modules, at module level or inside functions."""
  modules = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
  graph = {}
  for name, path in modules.items():
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
      else:
        continue
      edges |= {t for t in targets if t in modules and t != name}
    graph[name] = edges
  return graph


def test_no_import_cycles():
  graph = import_graph()
  assert len(graph) > 20
  state = {}

  def visit(node, stack):
    state[node] = "open"
    for nxt in graph[node]:
      if state.get(nxt) == "open":
        pytest.fail(f"import cycle: {' -> '.join(stack[stack.index(nxt):] + [node, nxt])}")
      if nxt not in state:
        visit(nxt, stack + [node])
    state[node] = "done"

  for node in graph:
    if node not in state:
      visit(node, [])


def imports_matplotlib(module: str) -> bool:
  path = ROOT / (module.replace(".", "/") + ".py")
  path = path if path.exists() else path.with_suffix("") / "__init__.py"
  return any(isinstance(node, (ast.Import, ast.ImportFrom)) and any(
      (getattr(node, "module", None) or alias.name).startswith("matplotlib") for alias in node.names)
      for node in ast.walk(ast.parse(path.read_text())))


def test_nothing_that_trains_imports_a_report_or_a_plot():
  """Training (the epoch loop, the steps, the workers), and everything it imports even inside a
  function, never reaches smjax.reports, the report command or matplotlib."""
  graph = import_graph()
  seen, todo = set(), ["smjax.run", "smjax.train", "smjax.parallel", "smjax.tickets"]
  while todo:
    module = todo.pop()
    if module not in seen:
      seen.add(module)
      todo += graph.get(module, ())
  assert not {m for m in seen if m.startswith("smjax.report")}, sorted(seen)
  assert not [m for m in seen if imports_matplotlib(m)]
  assert any(imports_matplotlib(m) for m in graph if m.startswith("smjax.reports."))  # can fail


def test_the_config_is_a_leaf():
  """smjax/config.py imports nothing of smjax, not even inside a function."""
  graph = import_graph()
  assert "smjax.config" in graph and graph["smjax.config"] == set()


def test_import_smjax_is_lazy_and_gives_the_submodules():
  code = ("import sys, smjax; assert 'jax' not in sys.modules, 'jax imported eagerly'; "
          "assert callable(smjax.masking.threshold_ste) and callable(smjax.train.make_train_step); "
          "assert 'masking' in dir(smjax)")
  subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def documented_commands() -> set[str]:
  texts = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
  found = set()
  for path in texts:
    found |= set(re.findall(r"python -m ((?:smjax|experiments|benchmarks)[\w.]*)", path.read_text()))
  return found


def test_every_documented_command_exists_and_has_help(monkeypatch, capsys):
  commands = documented_commands()
  assert {"experiments.digits", "experiments.zhou", "smjax.inspect", "smjax.report"} <= commands
  monkeypatch.setattr(os, "environ", dict(os.environ))  # entry points set runtime variables
  for module in sorted(commands):
    monkeypatch.setattr(sys, "argv", [module, "--help"])
    with pytest.raises(SystemExit) as exit_:
      runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert exit_.value.code in (0, None), module
    assert "usage" in capsys.readouterr().out.lower(), module

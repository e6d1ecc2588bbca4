"""The README's code is run, so it cannot drift from the API."""

import re
from pathlib import Path

README = (Path(__file__).parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_pure_step_snippet_runs_and_learns(capsys):
  snippet = next(b for b in BLOCKS if "make_train_step" in b)
  exec(compile(snippet, "README.md", "exec"), {})
  out = capsys.readouterr().out
  assert "dense1/kernel 19200" in out
  accuracy = float(re.search(r"test accuracy ([0-9.]+)", out)[1])
  assert accuracy > 0.5


def test_quickstart_is_two_commands_and_ci_runs_the_test_command():
  quick = README.split("## Quickstart")[1].split("\n## ")[0]
  commands = re.findall(r"```bash\n(.*?)\n```", quick, re.S)
  assert len(commands) == 2 and "experiments.digits" in commands[0]
  ci = (Path(__file__).parents[1] / ".ci" / "run").read_text()
  assert commands[1] in ci.splitlines()


def test_your_own_model_and_data_snippet_runs_every_regime(tmp_path, monkeypatch, capsys):
  section = README.split("## Your own model and data")[1].split("\n## ")[0]
  snippet = re.findall(r"```python\n(.*?)```", section, re.S)[0]
  monkeypatch.chdir(tmp_path)
  exec(compile(snippet, "README.md", "exec"), {})
  summary = (tmp_path / "runs" / "xor" / "report" / "summary.md").read_text()
  rows = {line.split("|")[1].strip(): line for line in summary.splitlines() if line.startswith("| ")}
  assert {"mask", "weight", "finetune"} <= set(rows)
  assert "[weight] tiny (322 params) on xor (900 train / 100 val / 200 test)" in capsys.readouterr().out
  from smjax import run
  assert max(m["test_accuracy"] for m in run.read_metrics(tmp_path / "runs/xor/weight")) > 0.9

"""Every run records what produced it, and says so when it resumes on other settings."""

import importlib.metadata
import json
import shutil
import subprocess
from pathlib import Path

import flax
import jax
import numpy as np
import optax
import pytest

from experiments import digits
from smjax import cli, inspect, provenance

SETS = ["model=lenet300-100", "batch_size=64", "epochs=1", "val_size=100"]
REPO = Path(__file__).resolve().parent.parent


def train_weights(workdir, *extra):
  args = ["--workdir", str(workdir), "--regime", "weight",
          *[a for s in SETS + list(extra) for a in ("--set", s)]]
  return cli.main(digits.get_config, "digits", args)


@pytest.fixture(scope="module")
def weight_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("provenance") / "weight"
  assert train_weights(workdir) == 0
  return workdir


def test_a_run_records_its_code_versions_and_machine(weight_run):
  sessions = provenance.read(weight_run)
  assert len(sessions) == 1
  record = sessions[0]
  if shutil.which("git") and (REPO / ".git").exists():
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.strip()
    assert record["code"]["commit"] == head and isinstance(record["code"]["dirty"], bool)
  versions = record["versions"]
  assert versions["jax"] == jax.__version__ and versions["flax"] == flax.__version__
  assert versions["optax"] == optax.__version__ and versions["numpy"] == np.__version__
  assert versions["orbax-checkpoint"] == importlib.metadata.version("orbax-checkpoint")
  assert record["backend"] == jax.default_backend() == "cpu"
  assert record["device_count"] == jax.device_count() == 4  # tests/conftest.py's
  assert record["xla_flags"] and "xla_force_host_platform_device_count=4" in record["xla_flags"]
  assert record["cpu"]["model"] and isinstance(record["cpu"]["isa"], list)
  assert record["cpu_threads"] >= 1 and record["date"].startswith("20")
  assert record["command"].split()[0].startswith("python")


def test_a_resume_on_another_processor_says_so_once_and_keeps_every_record(tmp_path, capsys):
  workdir = tmp_path / "weight"
  assert train_weights(workdir) == 0
  assert train_weights(workdir, "epochs=2") == 0  # the constant schedule extends the run
  assert "bit-identical" not in capsys.readouterr().err  # same settings: nothing to say
  assert provenance.read(workdir)[1]["differs_from_start"] == []
  path = workdir / "provenance.json"
  started = json.loads(path.read_text())
  started["sessions"][0]["cpu"]["isa"].append("avx1024")  # as if started on another processor
  path.write_text(json.dumps(started))
  assert train_weights(workdir, "epochs=3") == 0
  lines = [line for line in capsys.readouterr().err.splitlines() if "bit-identical" in line]
  assert len(lines) == 1 and "cpu.isa" in lines[0] and lines[0].startswith("warning: ")
  sessions = provenance.read(workdir)
  assert sessions[:2] == started["sessions"]  # earlier records are kept as they were
  assert len(sessions) == 3 and "avx1024" not in sessions[2]["cpu"]["isa"]
  assert sessions[2]["differs_from_start"] == ["cpu.isa"]


def test_differences_leave_out_what_cannot_change_a_result():
  a = {"date": "2026-01-01", "command": "x", "cpu_threads": 1, "runtime": {},
       "code": {"commit": "a", "dirty": False}, "versions": {"jax": "1"}}
  b = {**a, "date": "2026-02-02", "command": "y", "runtime": {"x": 1}}
  assert provenance.differences(a, b) == []
  c = {**b, "code": {"commit": "b", "dirty": False}, "versions": {"jax": "2"}, "cpu_threads": 2}
  assert provenance.differences(a, c) == ["code.commit", "cpu_threads", "versions.jax"]


def test_inspect_shows_provenance_and_compare_says_whether_it_matches(weight_run, tmp_path, capsys):
  assert inspect.main([str(weight_run)]) == 0
  out = capsys.readouterr().out
  assert "started 20" in out and f"jax {jax.__version__}" in out
  assert inspect.main([str(weight_run), "--compare", str(weight_run), "--json"]) == 0
  assert json.loads(capsys.readouterr().out)["provenance"] == {"same": True, "differences": []}
  other = tmp_path / "other"
  shutil.copytree(weight_run, other)
  moved = json.loads((other / "provenance.json").read_text())
  moved["sessions"][0]["versions"]["jaxlib"] = "0.0.1"
  (other / "provenance.json").write_text(json.dumps(moved))
  assert inspect.main([str(weight_run), "--compare", str(other)]) == 0
  assert "provenance: differs in versions.jaxlib" in capsys.readouterr().out


def test_report_paragraph_tells_started_from_first_recorded_and_what_changed_on_resume():
  base = {"date": "2026-01-01T00:00:00", "command": "x", "runtime": {}, "backend": "cpu",
          "cpu": {"model": "CPU", "isa": []}, "cpu_threads": 1,
          "code": {"commit": "a" * 40, "dirty": False}, "versions": {"jax": "1"}}
  later = {**base, "date": "2026-01-02T00:00:00", "code": {"commit": "b" * 40, "dirty": False}}
  old = [{**base, "start_unrecorded": True},
         {**later, "differs_from_start": ["code.commit", "start_unrecorded"]}]
  text = provenance.summary_text({"fresh": [base], "old": old, "older": []})
  assert "1 run started on commit aaaaaaaaaa, jax 1, cpu on CPU (1 threads) (2026-01-01)" in text
  assert "1 run first recorded when resumed on commit aaaaaaaaaa" in text
  # differences are those of the records, not the bookkeeping fields stored beside them
  assert "old (code.commit)" in text and "start_unrecorded" not in text
  assert "1 run without a record" in text
  lines = inspect.provenance_lines(old)  # `smjax.inspect RUN` says the same
  assert lines[0].startswith("resumed (its start not recorded)")
  assert lines[1].endswith("differs from the start in code.commit")

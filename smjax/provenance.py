"""What produced a run: code, command, software, machine. One record per training session.

XLA compiles for the processor it runs on, so the same code and config can sum in another
order on another processor (vector width, library builds) and give results that differ at the
noise level. A run's `provenance.json` lets a reader tell a code change from a machine change:

    {"sessions": [record, ...]}     the session that started the run, then one per resume

`record()` gives this process's record; `differences(a, b)` the fields in which two records
disagree on anything that can change a result bit for bit (not the date or the command line).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path

from smjax.workdir import CONFIG_FILE, PROVENANCE_FILE, write_json_atomic

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")
# CPU flags that decide what XLA:CPU vectorizes with (x86 and Arm names).
ISA_FLAG = re.compile(r"^(sse\d|ssse3|sse4_\d|avx|fma|f16c|amx|vnni|neon|asimd|sve|bf16)")
# What a resume may change and still continue bit-identically: the date, the command line, the
# malloc settings (the thread count is compared: a product split over another number of threads
# can add in another order); and the records' own bookkeeping.
NOT_COMPARED = ("date", "command", "runtime", "start_unrecorded", "differs_from_start")


def code_revision() -> dict:
  """{'commit', 'dirty'} of the git checkout smjax is imported from (dirty: tracked files
  modified), else {'version'} of the installed package."""
  package = Path(__file__).resolve().parent
  try:
    top = _git(package, "rev-parse", "--show-toplevel")
    if Path(top).resolve() == package.parent:
      return {"commit": _git(package, "rev-parse", "HEAD"),
              "dirty": bool(_git(package, "status", "--porcelain", "--untracked-files=no"))}
  except (OSError, subprocess.CalledProcessError):
    pass
  try:
    return {"version": importlib.metadata.version("smjax")}
  except importlib.metadata.PackageNotFoundError:
    return {"version": None}


def _git(cwd: Path, *args: str) -> str:
  return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True,
                        timeout=30).stdout.strip()


def cpu() -> dict:
  """{'model', 'isa'}: the processor's name and the vector-instruction flags XLA:CPU may use."""
  model, flags = platform.processor() or platform.machine(), []
  try:
    text = Path("/proc/cpuinfo").read_text()
  except OSError:
    text = ""
  for line in text.splitlines():
    key, _, value = line.partition(":")
    key = key.strip()
    if key in ("model name", "Model name") and value.strip():
      model = value.strip()
    elif key in ("flags", "Features") and not flags:
      flags = sorted(f for f in value.split() if ISA_FLAG.match(f))
  return {"model": model, "isa": flags}


def versions() -> dict:
  """{package: installed version} of the packages whose code computes a result."""
  out = {"python": platform.python_version()}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def record(argv: list[str] | None = None) -> dict:
  """This process's provenance: code revision, command, versions, backend and devices, CPU,
  XLA flags and smjax's runtime settings, the CPU threads it may use, the date (UTC)."""
  import jax

  from smjax import runtime
  device = jax.devices()[0]
  return {
      "code": code_revision(),
      "command": shlex.join([Path(sys.executable).name, *(sys.argv if argv is None else argv)]),
      "versions": versions(),
      "backend": jax.default_backend(),
      "device_kind": device.device_kind,
      "device_count": jax.device_count(),
      "platform_version": getattr(device.client, "platform_version", None),
      "process_count": jax.process_count(),
      "cpu": cpu(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "runtime": runtime.settings(),
      "cpu_threads": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }


def differences(a: dict, b: dict) -> list[str]:
  """The fields (dotted, e.g. 'cpu.isa', 'versions.jax') in which records `a` and `b` differ,
  leaving out those that cannot change a result (`NOT_COMPARED`)."""
  out = []
  for key in sorted(set(a) | set(b)):
    if key in NOT_COMPARED:
      continue
    x, y = a.get(key), b.get(key)
    if isinstance(x, dict) and isinstance(y, dict):
      out += [f"{key}.{k}" for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]
    elif x != y:
      out.append(key)
  return out


def read(run_dir: str | os.PathLike) -> list[dict]:
  """The run's session records, oldest first ([] for a run written before they were kept)."""
  path = Path(run_dir) / PROVENANCE_FILE
  if not path.exists():
    return []
  try:
    return json.loads(path.read_text())["sessions"]
  except (ValueError, KeyError, TypeError):
    return []


def append(run_dir: Path, current: dict, resumed: bool = False) -> str | None:
  """Adds `current` to the run's records (atomically; earlier ones are kept as they are).
  Returns one warning line when it differs from the session that started the run, whose
  differences it also records; else None. A run `resumed` without records (started before
  they were kept) gets `start_unrecorded` in its first one."""
  sessions = read(run_dir)
  warning = None
  if resumed and not sessions:
    current = {**current, "start_unrecorded": True}
  if sessions:
    diff = differences(sessions[0], current)
    current = {**current, "differs_from_start": diff}
    if diff:
      warning = (f"warning: {run_dir} resumed with another {', '.join(diff)} than it started with: "
                 "results may not be bit-identical to an uninterrupted run's")
  write_json_atomic(run_dir / PROVENANCE_FILE, {"sessions": sessions + [current]})
  return warning


def setting(session: dict) -> str:
  """A session's code, jax, backend and processor (or devices) in a few words."""
  code = session["code"]
  revision = (f"commit {code['commit'][:10]}{' (modified)' if code.get('dirty') else ''}"
              if code.get("commit") else f"smjax {code.get('version')}")
  where = (f"{session['cpu']['model']} ({session['cpu_threads']} threads)"
           if session["backend"] == "cpu" else f"{session['device_count']}x {session['device_kind']}")
  return f"{revision}, jax {session['versions']['jax']}, {session['backend']} on {where}"


def of_runs(root: str | os.PathLike) -> dict[str, list[dict]]:
  """{run directory relative to `root`: its session records} for every run under `root`."""
  root = Path(root)
  return {str(path.parent.relative_to(root)): read(path.parent)
          for path in sorted(root.rglob(CONFIG_FILE))
          if "report" not in path.relative_to(root).parts}


def summary_text(runs: dict[str, list[dict]]) -> str:
  """One paragraph for a report: the settings the runs started on (with dates), the runs
  resumed on other settings, the runs without records."""
  started: dict[tuple[str, bool], list[str]] = {}
  for sessions in runs.values():
    if sessions:
      first = (setting(sessions[0]), bool(sessions[0].get("start_unrecorded")))
      started.setdefault(first, []).append(sessions[0]["date"][:10])
  parts = [f"{len(dates)} run{'s' * (len(dates) > 1)} "
           f"{'first recorded when resumed' if unrecorded_start else 'started'} on {name} "
           f"({min(dates)}{'' if min(dates) == max(dates) else ' to ' + max(dates)})"
           for (name, unrecorded_start), dates in started.items()]
  moved = {run: sorted({d for s in sessions[1:] for d in differences(sessions[0], s)})
           for run, sessions in runs.items()}
  moved = {run: d for run, d in moved.items() if d}
  if moved:
    parts.append("resumed on other settings (may differ from an uninterrupted run in the last "
                 "bits): " + "; ".join(f"{run} ({', '.join(d)})" for run, d in moved.items()))
  unrecorded = sorted(run for run, sessions in runs.items() if not sessions)
  if unrecorded:
    parts.append(f"{len(unrecorded)} run{'s' * (len(unrecorded) > 1)} without a record "
                 "(started before provenance.json was kept)")
  return "Provenance (each run's provenance.json): " + "; ".join(parts) + "." if parts else ""

"""What every benchmark shares: the machine description, round-robin timing, the JSON writer."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import jax

from smjax import runtime

MALLOC_VARS = tuple(runtime.MALLOC_SETTINGS)
RUNTIME = {}  # what runtime.configure() set in this process


# Dense peak FLOP/s of one chip by the vendors' datasheets, first match of the device kind wins.
PEAK_FLOPS = (("H100 PCIe", {"bfloat16": 756e12, "float32": 51e12}),
              ("H100", {"bfloat16": 989e12, "float32": 67e12}),
              ("H200", {"bfloat16": 989e12, "float32": 67e12}),
              ("A100", {"bfloat16": 312e12, "float32": 19.5e12}))


def peak_flops(device_kind: str) -> dict[str, float] | None:
  """{'bfloat16': FLOP/s, 'float32': FLOP/s} of a known accelerator, else None."""
  return next((peak for name, peak in PEAK_FLOPS if name in device_kind), None)


def machine() -> dict:
  device = jax.local_devices()[0]
  kind = getattr(device, "device_kind", str(device))
  return {"platform": platform.platform(), "processor": platform.processor(),
          "cpu_count": os.cpu_count(), "jax": jax.__version__, "backend": jax.default_backend(),
          "device": kind, "peak_flops_per_second": peak_flops(kind),
          "devices": len(jax.local_devices()),
          "allocator_env": {k: os.environ.get(k) for k in MALLOC_VARS},
          "allocator_mallopt": RUNTIME.get("malloc", {}),
          "xla_flags": os.environ.get("XLA_FLAGS", "")}


def write_report(report: dict, path: str) -> None:
  """The benchmark's JSON, with its folder made."""
  out = Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(report, indent=2) + "\n")
  print(f"-> {out}")


def interleaved(calls: dict, steps: int, warmup: int) -> dict[str, list[float]]:
  """Round-robin timing of several zero-argument callables returning seconds.

  Each round starts one variant later, so that no variant always runs right after the same
  one (a JAX step right after a PyTorch one, for instance).
  """
  for call in calls.values():
    for _ in range(warmup):
      call()
  names = list(calls)
  times = {name: [] for name in names}
  for round_ in range(steps):
    for name in names[round_ % len(names):] + names[:round_ % len(names)]:
      times[name].append(calls[name]())
  return times

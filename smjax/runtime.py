"""Process settings that make CPU steps faster and steadier; applied by the experiment entry points.

Both must be in place before the work starts, so `configure()` runs first thing in a process
(before JAX starts its backend) and leaves alone whatever the environment already chose:

* XLA:CPU runs convolutions through YNNPACK by default; for training it is the slower path (the
  weight-gradient convolutions, windows as large as the feature map, run at a fraction of the
  speed of Eigen's). `--xla_cpu_experimental_ynn_fusion_type=-individual_convolution` hands
  convolutions back to Eigen and keeps YNNPACK's dots: WRN-16-4's step 1.5x faster on CPU
  (benchmarks/suite.py, docs/benchmarks/). Skipped when XLA_FLAGS already names the option.
* glibc's malloc returns large freed blocks to the OS and maps new ones for every step's
  activations; the same step then varies 2x between runs. The `MALLOC_*` settings below keep the
  heap instead; set with `mallopt` unless the variable is already in the environment. One arena
  matters most: XLA allocates a step's buffers from its own threads, and glibc serves a block
  over 64 MiB in a thread's arena by a fresh `mmap`, which the step then page-faults in
  (conv6 at batch 128: 123k minor faults and 917 ms per step, against none and 814 ms). It
  costs small steps a little (lenet300-100's 1.2 ms step about 8%); `MALLOC_ARENA_MAX` in the
  environment overrides it.

It also turns on JAX's persistent compilation cache (in ~/.cache/smjax/jax, or
$XDG_CACHE_HOME/smjax/jax), so the runs of a study after the first, and every rerun, load their
steps instead of compiling them again: LeNet-300-100's first epoch 8.6 s -> 2.6 s.
$JAX_COMPILATION_CACHE_DIR, when set, is used instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import jaxlib.version

YNN_OPTION = "--xla_cpu_experimental_ynn_fusion_type"
CPU_XLA_FLAGS = (f"{YNN_OPTION}=-individual_convolution",)
TESTED_JAXLIB = ("0.10.", "0.11.", "0.12.")  # the series the flag was measured with

# glibc mallopt parameters (malloc.h) and the values that keep the heap (mallopt takes an int).
MALLOC_SETTINGS = {  # env variable: (mallopt param, value)
    "MALLOC_TRIM_THRESHOLD_": (-1, 2**31 - 1),
    "MALLOC_TOP_PAD_": (-2, 1 << 30),
    "MALLOC_MMAP_THRESHOLD_": (-3, 2**31 - 1),
    "MALLOC_ARENA_MAX": (-8, 1),  # every thread allocates from the main heap
}
ENV_OPT_OUT = "SMJAX_DEFAULT_RUNTIME"
_applied: dict = {}  # what configure() set in this process


def xla_flags(current: str, jaxlib_version: str | None = None) -> str:
  """`current` XLA_FLAGS plus the CPU defaults whose option it does not set.

  Only for the jaxlib series they were measured with: XLA aborts on a flag it does not know.
  """
  if not (jaxlib_version or jaxlib.version.__version__).startswith(TESTED_JAXLIB):
    return current
  flags = current.split()
  for flag in CPU_XLA_FLAGS:
    if not any(f.split("=")[0] == flag.split("=")[0] for f in flags):
      flags.append(flag)
  return " ".join(flags)


def steady_malloc() -> dict[str, int]:
  """Applies `MALLOC_SETTINGS` not already in the environment; returns those applied."""
  if not sys.platform.startswith("linux"):
    return {}
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # not glibc
    return {}
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  applied = {}
  for name, (param, value) in MALLOC_SETTINGS.items():
    if name not in os.environ and mallopt(param, value) == 1:
      applied[name] = value
  return applied


def compilation_cache_dir() -> str:
  """Where compiled steps are kept between processes: $JAX_COMPILATION_CACHE_DIR (which JAX reads
  itself), else $XDG_CACHE_HOME/smjax/jax (~/.cache/smjax/jax)."""
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return os.environ["JAX_COMPILATION_CACHE_DIR"]
  cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(cache_home, "smjax", "jax")


def configure() -> dict:
  """Applies the settings above (unless `SMJAX_DEFAULT_RUNTIME=0`); returns what it set."""
  if os.environ.get(ENV_OPT_OUT, "1") == "0":
    return {}
  import jax
  os.environ["XLA_FLAGS"] = xla_flags(os.environ.get("XLA_FLAGS", ""))
  jax.config.update("jax_compilation_cache_dir", compilation_cache_dir())
  _applied.update({"XLA_FLAGS": os.environ["XLA_FLAGS"], "malloc": steady_malloc(),
                   "compilation_cache_dir": jax.config.jax_compilation_cache_dir})
  return dict(_applied)


def settings() -> dict:
  """The runtime settings in force in this process: whether `configure()` ran, the malloc
  settings it applied or found in the environment (which change speed, not results)."""
  return {"configured": bool(_applied), "malloc_applied": _applied.get("malloc", {}),
          "malloc_environment": {k: os.environ[k] for k in MALLOC_SETTINGS if k in os.environ},
          ENV_OPT_OUT: os.environ.get(ENV_OPT_OUT)}

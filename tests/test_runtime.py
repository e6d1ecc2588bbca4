import json
import os
import subprocess
import sys

import pytest

from smjax import runtime

OPTION = runtime.YNN_OPTION


def test_xla_flags_add_the_cpu_default_and_keep_the_users():
  assert runtime.xla_flags("") == f"{OPTION}=-individual_convolution"
  assert runtime.xla_flags("--a=1") == f"--a=1 {OPTION}=-individual_convolution"
  assert runtime.xla_flags(f"{OPTION}=") == f"{OPTION}="  # the user's choice wins
  assert runtime.xla_flags(runtime.xla_flags("")) == runtime.xla_flags("")
  for measured in ("0.10.2", "0.11.2", "0.12.0.1"):
    assert runtime.xla_flags("--a=1", jaxlib_version=measured) == f"--a=1 {OPTION}=-individual_convolution"
  assert runtime.xla_flags("--a=1", jaxlib_version="0.13.0") == "--a=1"  # not measured there


def run_configured(env_extra: dict, cache_home: str) -> dict:
  """configure() in a fresh process with an empty compilation cache under `cache_home`, then
  whether XLA ran a convolution through YNNPACK."""
  code = """
import json, jax, jax.numpy as jnp
from smjax import runtime
applied = runtime.configure()
conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
               dimension_numbers=("NHWC", "HWIO", "NHWC")))
hlo = conv.lower(jnp.ones((4, 8, 8, 64)), jnp.ones((3, 3, 64, 64))).compile().as_text()
print(json.dumps({"applied": applied, "ynn_conv": "__ynn_fusion" in hlo}))
"""
  env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
  env.pop("XLA_FLAGS", None)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  env.update({"XDG_CACHE_HOME": cache_home, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
              **env_extra})
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_configure_moves_convolutions_off_ynnpack_sets_malloc_and_caches_compiles(tmp_path):
  default = run_configured({runtime.ENV_OPT_OUT: "0"}, str(tmp_path / "default"))
  configured = run_configured({}, str(tmp_path / "configured"))
  assert default["applied"] == {} and default["ynn_conv"]  # the XLA default this undoes
  assert not configured["ynn_conv"]
  if sys.platform.startswith("linux"):
    assert set(configured["applied"]["malloc"]) == set(runtime.MALLOC_SETTINGS)
  cache = tmp_path / "configured" / "smjax" / "jax"  # $XDG_CACHE_HOME/smjax/jax
  assert configured["applied"]["compilation_cache_dir"] == str(cache)
  assert any(cache.iterdir())  # the convolution's compiled program, for the next process
  assert not (tmp_path / "default").exists()


def test_configure_leaves_malloc_variables_already_set(tmp_path):
  configured = run_configured({"MALLOC_TOP_PAD_": "1048576"}, str(tmp_path))
  assert "MALLOC_TOP_PAD_" not in configured["applied"]["malloc"]


def thread_allocation_faults(env_extra: dict) -> int:
  """Minor page faults of the 2nd and 3rd 128 MiB malloc, written and freed, in a worker
  thread (as XLA's threads allocate a step's buffers), in a fresh configured process."""
  code = """
import ctypes, ctypes.util, resource, threading
from smjax import runtime
runtime.configure()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
faults = []
def allocate():
  for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(2**27)
    ctypes.memset(block, 1, 2**27)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
thread = threading.Thread(target=allocate)
thread.start()
thread.join()
print(sum(faults[1:]))
"""
  env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
  env.update(env_extra)
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True)
  return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_one_arena_reuses_the_heap_for_large_blocks_from_threads():
  pages = 2 * 2**27 // 4096  # the 2nd and 3rd block in 4 KiB pages
  assert thread_allocation_faults({}) < 0.05 * pages
  assert thread_allocation_faults({"MALLOC_ARENA_MAX": "8"}) > 0.9 * pages  # mmap per block

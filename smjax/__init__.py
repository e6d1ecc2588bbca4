"""smjax: supermasks over a network's frozen random initialization, in JAX and Flax.

`import smjax` is cheap; `smjax.masking`, `smjax.train`, ... are imported on first use.
"""

import importlib

SUBMODULES = ("augment", "checkpoint", "cli", "config", "data", "dataset_files", "distributed",
              "inspect", "masking", "models", "optim", "parallel", "provenance", "pruning",
              "report", "reports", "run", "runtime", "statistics", "stopping", "tickets", "train",
              "workdir", "writer")


def __getattr__(name: str):
  if name in SUBMODULES:
    return importlib.import_module(f"smjax.{name}")
  raise AttributeError(f"module 'smjax' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(SUBMODULES))

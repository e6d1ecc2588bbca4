"""Top-k's k-th value: a counting search against a sort, on every masked layer of a model.

    python -m benchmarks.topk --model wrn28-10 --out runs/benchmark_topk.json

Times one jitted call that builds the top-k mask of every maskable kernel of the model (the
work `topk_ste` adds to a mask-mode step) with each method of `masking.KTH_LARGEST`, on
continuous scores and on scores with many ties, interleaved round-robin. Writes JSON; the
method `masking.kth_largest_method()` picks on this backend is recorded beside the times.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import RUNTIME, interleaved, machine, write_report
from smjax import masking, models, runtime
from smjax.config import Config


def layer_sizes(model_name: str, shape) -> list[int]:
  """Sizes of the model's maskable kernels."""
  model = models.from_config(Config(model=model_name), 10)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape)),
                                                train=False))
  params = variables["params"]
  return [int(np.prod(leaf.shape)) for path, leaf in
          jax.tree_util.tree_flatten_with_path(params)[0]
          if tuple(getattr(p, "key", p) for p in path) in set(masking.maskable_paths(params))]


def scores_of(sizes: list[int], ties: bool, seed: int = 0) -> list[jax.Array]:
  """|scores| per layer: normal, or rounded to 2 decimals (many ties at the k-th value)."""
  rng = np.random.default_rng(seed)
  out = []
  for size in sizes:
    s = np.abs(rng.normal(size=size)).astype(np.float32)
    out.append(jnp.asarray(np.round(s, 2) if ties else s))
  return out


def timer(method: str, scores: list[jax.Array], fraction: float):
  ks = [masking.kept_count(s.size, fraction) for s in scores]
  fn = jax.jit(lambda ss: [masking.topk_flat_mask(s, k, method) for s, k in zip(ss, ks)])
  masks = jax.block_until_ready(fn(scores))
  assert [int(m.sum()) for m in masks] == ks

  def call() -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(scores))
    return time.perf_counter() - start
  return call


def main(argv=None) -> dict:
  RUNTIME.update(runtime.configure())
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="wrn16-4")
  parser.add_argument("--fraction", type=float, default=0.5, help="fraction kept")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--out", default="runs/benchmark_topk.json")
  args = parser.parse_args(argv)
  shape = (28, 28, 1) if args.model.startswith("lenet") else (32, 32, 3)
  sizes = layer_sizes(args.model, shape)
  calls = {f"{method}/{'tied' if ties else 'continuous'}":
           timer(method, scores_of(sizes, ties), args.fraction)
           for ties in (False, True) for method in masking.KTH_LARGEST}
  times = interleaved(calls, args.steps, args.warmup)
  results = {name: {"median_ms": 1e3 * statistics.median(ts), "min_ms": 1e3 * min(ts)}
             for name, ts in times.items()}
  for name, r in results.items():
    print(f"{args.model:12s} {name:20s} {r['median_ms']:9.3f} ms", flush=True)
  report = {"args": vars(args), "machine": machine(), "layers": len(sizes),
            "weights": sum(sizes), "chosen_method": masking.kth_largest_method(),
            "results": results}
  write_report(report, args.out)
  return report


if __name__ == "__main__":
  main()

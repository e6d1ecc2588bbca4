"""Benchmark suite: step time, throughput, FLOPs, memory, dispatch and input overhead.

    python -m benchmarks.suite                                   # lenet300-100, conv6, wrn16-4
    python -m benchmarks.suite --models wrn16-4 --modes weight mask --estimators threshold
    python -m benchmarks.suite --dtype bfloat16 --out runs/benchmark_bf16.json
    python -m benchmarks.suite --torch                           # + PyTorch WRN-16-4 side by side
    python -m benchmarks.suite --models conv2 --batch 64 --torch --set optimizer=adam  # Conv-2
    python -m benchmarks.suite --models lenet300-100 --also optimizer=adam  # + Adam weights

Per model and mode (mask mode once per estimator), after warm-up and interleaved round-robin so
drift hits every variant alike: median ms per train step of one jitted call per step (dispatched
asynchronously in bursts of `--steps-per-call`, as the training loop does) and of the scanned
path (one compiled call per burst), images/s, XLA's FLOPs per step and the achieved FLOP/s,
the FLOPs of its dots and convolutions counted in the jaxpr (XLA's count on GPU leaves out the
convolutions cuDNN runs) and their rate (with its fraction of the chip's datasheet dense peak on
a known accelerator), the compiled program's memory, and the ratios mask/weight and
per-step/scanned.
With `--epoch-steps N`, one epoch of N steps through the runs' own loop against N x the median
step. wrn28-10 joins the default models when an accelerator is present. Runs with the
defaults of `smjax.runtime` (`SMJAX_DEFAULT_RUNTIME=0` measures without them). Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import jax
import numpy as np
from jax.extend import core as jax_core

from benchmarks.common import RUNTIME, interleaved, machine, write_report
from smjax import config as config_lib
from smjax import masking, models, run, runtime, train
from smjax.config import Config
from smjax.models import winograd

SHAPES = {"lenet300-100": ("mnist", (28, 28, 1))}
TORCH_MODELS = ("wrn16-4", "conv2", "conv4", "conv6")  # benchmarks/torch_peer.py
DEFAULT_SHAPE = ("cifar10", (32, 32, 3))


def _conv_flops(eqn: jax_core.JaxprEqn) -> int:
  """2 x the multiply-adds of a convolution that meet an input element, as XLA's cost
  analysis counts them: none with padding or with the holes of an lhs dilation (the input
  gradient of a strided convolution), so forward, input and weight gradients count alike."""
  lhs, rhs = (v.aval.shape for v in eqn.invars)
  out = eqn.outvars[0].aval.shape
  p = eqn.params
  lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
  pairs = 1
  for i, (stride, (low, _), lhs_dil, rhs_dil) in enumerate(zip(
      p["window_strides"], p["padding"], p["lhs_dilation"], p["rhs_dilation"])):
    o = np.arange(out[out_spec[2 + i]])[:, None]
    position = o * stride + np.arange(rhs[rhs_spec[2 + i]])[None, :] * rhs_dil - low
    extent = (lhs[lhs_spec[2 + i]] - 1) * lhs_dil
    pairs *= int(np.sum((position >= 0) & (position <= extent) & (position % lhs_dil == 0)))
  return 2 * out[out_spec[0]] * out[out_spec[1]] * rhs[rhs_spec[1]] * pairs


def matmul_flops(jaxpr: jax_core.Jaxpr) -> int:
  """FLOPs (2 per multiply-add) of the dot products and convolutions in `jaxpr` and the jaxprs
  it calls: the work that a datasheet's dense peak refers to, counted the same on every backend.

  A scan's body counts `length` times, a cond's costliest branch once, a while loop's body once.
  """
  total = 0
  for eqn in jaxpr.eqns:
    out = math.prod(eqn.outvars[0].aval.shape) if eqn.outvars else 0
    if eqn.primitive.name == "dot_general":
      (contracting, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2 * out * math.prod(lhs[d] for d in contracting)
    elif eqn.primitive.name == "conv_general_dilated":
      total += _conv_flops(eqn)
    else:
      inner = [matmul_flops(j) for j in jax_core.jaxprs_in_params(eqn.params)]
      if inner:
        total += (max(inner) if eqn.primitive.name == "cond" else
                  sum(inner) * eqn.params.get("length", 1))
  return total


def synthetic_batch(batch: int, shape, k: int | None = None) -> dict:
  rng = np.random.default_rng(0)
  lead = (batch,) if k is None else (k, batch)
  return jax.device_put({"image": rng.integers(0, 256, (*lead, *shape), np.uint8),
                         "label": rng.integers(0, 10, lead).astype(np.int32)})


def step_matmul_flops(config: Config, shape) -> int:
  """FLOPs of the dots and convolutions in one train step's jaxpr (traced, not compiled)."""
  model = models.from_config(config, 10)
  state = jax.eval_shape(lambda: train.create_state(jax.random.key(0), model, shape, config))
  batch = {"image": jax.ShapeDtypeStruct((config.batch_size, *shape), np.uint8),
           "label": jax.ShapeDtypeStruct((config.batch_size,), np.int32)}
  step = train.make_train_step(model, config)
  return matmul_flops(jax.make_jaxpr(step)(state, batch, jax.random.key(1)).jaxpr)


class Variant:
  """One compiled train function; `call()` times a burst of `burst` steps: `burst` dispatches
  of the per-step function (async, as the training loop runs them), or one call of the
  scanned function, which does `burst` steps. Both paths see the same `burst` fixed batches in
  the same order, so they follow the same trajectory (top-k's work depends on the scores)."""

  def __init__(self, config: Config, shape, steps_per_call: int = 1, burst: int = 1):
    model = models.from_config(config, 10)
    self.state = train.create_state(jax.random.key(0), model, shape, config)
    step = train.make_train_step(model, config)
    self.k = steps_per_call
    if steps_per_call > 1:
      step = train.make_multi_train_step(step)
    stacked = synthetic_batch(config.batch_size, shape, max(steps_per_call, burst))
    self.batches = ([stacked] if steps_per_call > 1 else
                    [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(burst)])
    self.key = jax.random.key(1)
    self.fn = train.jit_train_step(step)
    self.matmul_flops = step_matmul_flops(config, shape)  # of one step, scanned or not
    compiled = self.fn.lower(self.state, self.batches[0], self.key).compile()
    cost = compiled.cost_analysis()  # on GPU without the convolutions run as library calls
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    self.flops = float((cost or {}).get("flops", float("nan")))
    memory = compiled.memory_analysis()
    self.memory_bytes = None if memory is None else int(
        memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
        - memory.alias_size_in_bytes)

  def call(self) -> float:
    """Seconds per train step over one burst."""
    start = time.perf_counter()
    for batch in self.batches:
      self.state, metrics = self.fn(self.state, batch, self.key)
    jax.block_until_ready((self.state, metrics))
    return (time.perf_counter() - start) / (self.k * len(self.batches))


def benchmark_model(name: str, args, peak: float | None = None) -> dict:
  dataset, shape = SHAPES.get(name, DEFAULT_SHAPE)
  first, *others = args.conv_algorithms
  base = config_lib.with_overrides(Config(model=name, dataset=dataset, batch_size=args.batch,
                                          dtype=args.dtype, conv_algorithm=first), args.set)
  configs = {}
  if "weight" in args.modes:
    configs["weight"] = base.replace(mode="weight")
  if "mask" in args.modes:
    configs.update({f"mask/{e}": base.replace(mode="mask", estimator=e) for e in args.estimators})
  variants = {n: Variant(c, shape, burst=args.steps_per_call) for n, c in configs.items()}
  if args.steps_per_call > 1:
    variants.update({f"{n}/scan": Variant(c, shape, args.steps_per_call)
                     for n, c in configs.items()})
  # Per-step variants of every mode with one change each, timed in the same rounds.
  groups = [f"conv={a}" for a in others] + list(args.also)
  for group in groups:
    change = [f"conv_algorithm={group[5:]}"] if group.startswith("conv=") else [group]
    variants.update({f"{n}/{group}": Variant(config_lib.with_overrides(c, change), shape,
                                             burst=args.steps_per_call)
                     for n, c in configs.items()})
  for n in configs:  # XLA's cost analysis counts a while loop's body once: use the step's
    if f"{n}/scan" in variants:
      variants[f"{n}/scan"].flops = variants[n].flops
  calls = {n: v.call for n, v in variants.items()}
  if args.torch and name in TORCH_MODELS:
    from benchmarks import torch_peer as benchmark_torch
    calls.update(benchmark_torch.calls(args.batch, name, args.modes))
  times = interleaved(calls, args.steps, args.warmup)
  results = {}
  direct = None  # PyTorch's step: the network's direct convolutions, as XLA's run them
  if any(n.startswith("torch") for n in times):
    direct = step_matmul_flops(base.replace(mode="mask", conv_algorithm="xla"), shape)
  for variant, ts in times.items():
    median = statistics.median(ts)
    v = variants.get(variant)
    flops = v.flops if v else None
    matmul = v.matmul_flops if v else direct
    results[variant] = {
        "median_ms": 1e3 * median, "min_ms": 1e3 * min(ts), "images_per_second": args.batch / median,
        "flops_per_step": flops,  # XLA's cost analysis of the compiled step
        "achieved_flops_per_second": flops / median if flops else None,
        "matmul_flops_per_step": matmul,  # dots and convolutions, from the jaxpr
        "achieved_matmul_flops_per_second": matmul / median if matmul else None,
        "compiled_memory_bytes": v.memory_bytes if v else None}
    if peak and matmul:
      results[variant]["fraction_of_peak"] = matmul / median / peak
  ms = lambda n: results[n]["median_ms"]
  masks = [n for n in configs if n.startswith("mask")]
  ratios = {}
  for suffix in [""] + [f"/{g}" for g in groups]:  # mask_to_weight, mask_to_weight/conv=xla, ...
    if f"weight{suffix}" in results:
      ratios[f"mask_to_weight{suffix}"] = {n: ms(f"{n}{suffix}") / ms(f"weight{suffix}")
                                           for n in masks}
  ratios["per_step_to_scan_images_per_second"] = {
      n: results[n]["images_per_second"] / results[f"{n}/scan"]["images_per_second"]
      for n in configs if f"{n}/scan" in results}
  ratios["to_unchanged"] = {f"{n}/{g}": ms(f"{n}/{g}") / ms(n) for g in groups for n in configs}
  for torch_name in [n for n in results if n.startswith("torch")]:
    jax_name = "weight" if torch_name.startswith("torch/weight") else "mask/threshold"
    ratios[f"{torch_name}_to_jax_{jax_name.replace('/', '_')}"] = (
        results[torch_name]["median_ms"] / results[jax_name]["median_ms"]
        if jax_name in results else None)
  out = {"input_shape": shape, "config": base.to_dict(), "results": results, "ratios": ratios}
  if args.epoch_steps:
    from benchmarks.input_pipeline import epoch_vs_steps, synthetic
    out["epoch"] = epoch_vs_steps(name, dataset, synthetic(shape, args.epoch_steps * args.batch),
                                  args.batch, dtype=args.dtype, overrides=args.set)
  return out


OWN_KEYS = ("model", "dataset", "batch_size", "dtype", "conv_algorithm", "mode", "estimator")


def check_overrides(overrides: list[str], parser: argparse.ArgumentParser, flag: str) -> None:
  """Refuses (one line, exit 2) keys the suite varies itself and overrides that make an invalid
  config."""
  for item in overrides:
    if item.partition("=")[0] in OWN_KEYS:
      parser.error(f"{flag} {item}: the suite sets {item.partition('=')[0]} itself; "
                   "use --models, --modes, --estimators, --batch, --dtype, --conv-algorithms")
  try:
    run.validate(config_lib.with_overrides(Config(), overrides))
  except ValueError as e:
    parser.error(f"{flag}: {e}")


def main(argv=None) -> dict:
  RUNTIME.update(runtime.configure())
  accelerator = jax.default_backend() != "cpu"
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", nargs="+", default=["lenet300-100", "conv6", "wrn16-4"] +
                      (["wrn28-10"] if accelerator else []))
  parser.add_argument("--modes", nargs="+", default=["weight", "mask"], choices=["weight", "mask"])
  parser.add_argument("--estimators", nargs="+", default=list(masking.ESTIMATORS),
                      choices=masking.ESTIMATORS)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--steps", type=int, default=5, help="timed calls per variant")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--steps-per-call", type=int, default=8, help="scanned path (1: skip)")
  parser.add_argument("--epoch-steps", type=int, default=0, help="also time an epoch of N steps")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--conv-algorithms", nargs="+", default=["auto"],
                      choices=winograd.ALGORITHMS, help="the first for all variants; the others "
                      "add per-step variants named .../conv=NAME")
  parser.add_argument("--torch", action="store_true",
                      help=f"PyTorch steps side by side ({', '.join(TORCH_MODELS)})")
  parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                      help="config overrides for every variant, e.g. score_init=kaiming_uniform")
  parser.add_argument("--also", nargs="+", default=[], metavar="KEY=VALUE",
                      help="each adds per-step variants of every mode with that one override, "
                      "named .../KEY=VALUE, e.g. optimizer=adam (the weight step's optimizer)")
  parser.add_argument("--out", default="runs/benchmark.json")
  args = parser.parse_args(argv)
  check_overrides(args.set, parser, "--set")
  for item in args.also:
    check_overrides(args.set + [item], parser, "--also")
  report = {"args": vars(args), "machine": machine(), "models": {}}
  for name in args.models:
    report["models"][name] = benchmark_model(
        name, args, (report["machine"]["peak_flops_per_second"] or {}).get(args.dtype))
    for variant, r in report["models"][name]["results"].items():
      print(f"{name:14s} {variant:24s} {r['median_ms']:10.2f} ms/step "
            f"{r['images_per_second']:10.1f} img/s", flush=True)
    print(json.dumps(report["models"][name]["ratios"]), flush=True)
  write_report(report, args.out)
  return report


if __name__ == "__main__":
  main()

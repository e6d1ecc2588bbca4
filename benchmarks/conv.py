"""Per-convolution benchmark: where a network's step time goes, layer shape by layer shape.

    python -m benchmarks.conv                              # wrn16-4, batch 128
    python -m benchmarks.conv --torch                      # + PyTorch, same shapes
    python -m benchmarks.conv --model conv6 --out runs/benchmark_conv6.json

Records every distinct convolution of the model (input shape, kernel, strides, padding) and
times its forward pass, input gradient and weight gradient, each jitted alone, as XLA lowers
them: median ms and GFLOP/s of the layer's multiply-adds, and the sums over the network's layers.
With `--torch`, the same three parts in PyTorch (`aten.convolution_backward`, NCHW and
channels_last; `pip install torch==2.13.0`), interleaved with the JAX calls. Runs with the
defaults of `smjax.runtime`. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import write_report
from smjax import models, runtime
from smjax.models import winograd

NHWC = ("NHWC", "HWIO", "NHWC")
PARTS = ("forward", "input_grad", "weight_grad")


def conv_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[dict]:
  """Every nn.Conv call of one forward pass: name, input shape, kernel, strides, padding."""
  layers = []

  def record(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name == "__call__" and isinstance(module, nn.Conv):
      layers.append({"name": "/".join(module.path), "input": list(args[0].shape[1:]),
                     "kernel": [*module.kernel_size, args[0].shape[-1], module.features],
                     "strides": np.broadcast_to(module.strides or 1, 2).tolist(),
                     "padding": module.padding})
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *input_shape)),
                                      train=False))
  return layers


def distinct_shapes(layers: list[dict]) -> list[dict]:
  """One entry per distinct convolution, with the names of the layers that use it."""
  shapes: dict[str, dict] = {}
  for layer in layers:
    shape = {k: layer[k] for k in ("input", "kernel", "strides", "padding")}
    shapes.setdefault(json.dumps(shape), {**shape, "names": []})["names"].append(layer["name"])
  return list(shapes.values())


def seconds(fn, *args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def jax_parts(shape: dict, batch: int, conv=jax.lax.conv_general_dilated) -> tuple[dict, float]:
  """Zero-argument callables (one call each, seconds) for the three parts; the layer's GFLOP.

  `conv`: `lax.conv_general_dilated` or a stand-in (`winograd.conv_general_dilated`)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(batch, *shape["input"])), jnp.float32)  # [n, h, w, c]
  w = jnp.asarray(rng.normal(size=shape["kernel"]) * 0.05, jnp.float32)  # [kh, kw, c, o]
  dimension_numbers = jax.lax.conv_dimension_numbers(x.shape, w.shape, NHWC)
  forward = lambda x, w: conv(x, w, tuple(shape["strides"]), shape["padding"],
                              dimension_numbers=dimension_numbers)
  g = jnp.ones(jax.eval_shape(forward, x, w).shape, jnp.float32)
  fns = {
      "forward": (jax.jit(forward), (x, w)),
      "input_grad": (jax.jit(lambda x, w, g: jax.vjp(lambda x: forward(x, w), x)[1](g)[0]),
                     (x, w, g)),
      "weight_grad": (jax.jit(lambda x, w, g: jax.vjp(lambda w: forward(x, w), w)[1](g)[0]),
                      (x, w, g)),
  }
  gflop = 2 * np.prod(g.shape) * np.prod(shape["kernel"][:3]) / 1e9
  return {p: (lambda f=f, a=a: seconds(f, *a)) for p, (f, a) in fns.items()}, float(gflop)


def torch_parts(shape: dict, batch: int, channels_last: bool) -> dict:
  """The same three parts in PyTorch (symmetric padding k // 2: the same work as SAME)."""
  import torch
  torch.set_num_threads(os.cpu_count())
  (h, wd, c), (kh, kw, _, o) = shape["input"], shape["kernel"]
  fmt = torch.channels_last if channels_last else torch.contiguous_format
  x = torch.randn(batch, c, h, wd).contiguous(memory_format=fmt)
  w = (0.05 * torch.randn(o, c, kh, kw)).contiguous(memory_format=fmt)
  stride, padding = tuple(shape["strides"]), (kh // 2, kw // 2) if shape["padding"] == "SAME" else 0
  g = torch.ones_like(torch.nn.functional.conv2d(x, w, None, stride, padding))
  backward = lambda mask: torch.ops.aten.convolution_backward(
      g, x, w, None, stride, padding, (1, 1), False, (0, 0), 1, mask)

  def timed(fn):
    def call():
      start = time.perf_counter()
      with torch.no_grad():
        fn()
      return time.perf_counter() - start
    return call

  return {"forward": timed(lambda: torch.nn.functional.conv2d(x, w, None, stride, padding)),
          "input_grad": timed(lambda: backward([True, False, False])),
          "weight_grad": timed(lambda: backward([False, True, False]))}


def main(argv=None) -> dict:
  applied = runtime.configure()
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="wrn16-4")
  parser.add_argument("--input-shape", type=int, nargs=3, default=[32, 32, 3])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--steps", type=int, default=5, help="timed calls per part")
  parser.add_argument("--conv-algorithms", nargs="+", default=["xla", "winograd"],
                      choices=("xla", "winograd"), help="JAX convolutions to time")
  parser.add_argument("--torch", action="store_true", help="PyTorch on the same shapes")
  parser.add_argument("--out", default="runs/benchmark_conv.json")
  args = parser.parse_args(argv)
  convs = {"xla": jax.lax.conv_general_dilated, "winograd": winograd.conv_general_dilated}
  jax_backends = [f"jax/{a}" for a in args.conv_algorithms]
  backends = jax_backends + (["torch/nchw", "torch/channels_last"] if args.torch else [])
  rows = []
  totals = {b: dict.fromkeys(PARTS, 0.0) for b in backends}
  for shape in distinct_shapes(conv_layers(models.get(args.model, 10), tuple(args.input_shape))):
    calls = {}
    for backend in jax_backends:
      parts, gflop = jax_parts(shape, args.batch, convs[backend.split("/")[1]])
      calls.update({(backend, p): f for p, f in parts.items()})
    for backend in backends[len(jax_backends):]:
      parts = torch_parts(shape, args.batch, backend.endswith("channels_last"))
      calls.update({(backend, p): f for p, f in parts.items()})
    for call in calls.values():  # warm-up (and compilation)
      call()
    times = {key: [] for key in calls}
    for _ in range(args.steps):
      for key, call in calls.items():
        times[key].append(call())
    ms = {b: {p: 1e3 * statistics.median(times[b, p]) for p in PARTS} for b in backends}
    row = {**shape, "count": len(shape["names"]), "gflop": gflop, "ms": ms,
           "gflop_per_second": {b: {p: gflop / (m / 1e3) for p, m in ms[b].items()} for b in ms}}
    for b in backends:
      for p in PARTS:
        totals[b][p] += row["count"] * ms[b][p]
    rows.append(row)
    print(shape["input"], shape["kernel"], shape["strides"], f"x{row['count']}",
          {b: [round(m) for m in ms[b].values()] for b in backends}, flush=True)
  report = {"args": vars(args), "runtime": applied, "jax": jax.__version__, "layers": rows,
            "network_total_ms": {b: {**t, "all": sum(t.values())} for b, t in totals.items()}}
  print(json.dumps(report["network_total_ms"]))
  write_report(report, args.out)
  return report


if __name__ == "__main__":
  main()

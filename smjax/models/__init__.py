"""Classifiers behind a name registry: the built-in flax.linen models, and any you register.

The contract a model meets (built-in or registered with `register`):

    factory(num_classes, **options) -> flax.linen.Module
    module.apply(variables, x, train=bool[, mutable=["batch_stats"], rngs={"dropout": key}])
        x: float32 [batch, height, width, channels], already normalised (smjax.data's contract)
        returns logits [batch, num_classes]

`options` are passed only when the factory's signature names them (or takes **kwargs), so a
model never has to accept a setting it does not use:

    dtype          the compute dtype (config `dtype`)
    conv           a `lax.conv_general_dilated` stand-in for nn.Conv (config `conv_algorithm`)
    dropout_rate   config `dropout_rate`
    downsampling   config `downsampling`

A module with an `axis_name` field gets the device axis under pmap (cross-device BatchNorm);
BatchNorm statistics go in the "batch_stats" collection. Masks go on the leaves that
`smjax.masking`'s rule picks (config `mask_layers`; default every conv and dense `kernel`).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from smjax.config import check_choice
from smjax.models import winograd
from smjax.models.small import MLP, ConvNet, LeNet5
from smjax.models.wide_resnet import DOWNSAMPLING, WideResNet

Factory = Callable[..., nn.Module]


def _mlp(num_classes, dtype=jnp.float32):
  return MLP((300, 100), num_classes, dtype=dtype)


def _conv_net(pairs: int) -> Factory:
  def factory(num_classes, dtype=jnp.float32, conv=None):
    return ConvNet(pairs, num_classes, dtype=dtype, conv=conv)
  return factory


def _lenet5(num_classes, dtype=jnp.float32, conv=None):
  return LeNet5(num_classes, dtype=dtype, conv=conv)


_REGISTRY: dict[str, Factory] = {
    "lenet300-100": _mlp, "lenet5": _lenet5,
    "conv2": _conv_net(1), "conv4": _conv_net(2), "conv6": _conv_net(3),
}
BUILT_IN = tuple(_REGISTRY)
_WRN = re.compile(r"wrn(\d+)-(\d+)$")


def register(name: str, factory: Factory) -> None:
  """Makes `name` a model of every command (`--set model=NAME`): `factory(num_classes,
  **options)` builds it (the module docstring has the contract). Register at the top level of
  your experiment module, so that worker processes (`--jobs`) register it too. A name may be
  registered again (the latest wins); a built-in name may not."""
  if name in BUILT_IN or _WRN.match(name):
    raise ValueError(f"{name!r} is a built-in model; register yours under another name")
  if not callable(factory):
    raise TypeError(f"the factory of model {name!r} must be callable, got {factory!r}")
  _REGISTRY[name] = factory


def names() -> tuple[str, ...]:
  """The model names `get` takes (the Wide ResNets as a pattern)."""
  return tuple(_REGISTRY) + ("wrnD-K (D = 6n + 4, e.g. wrn16-4, wrn28-10)",)


def _wide_resnet(depth: int, width: int) -> Factory:
  def factory(num_classes, dtype=jnp.float32, conv=None, dropout_rate=0.0, downsampling="stride"):
    if downsampling not in DOWNSAMPLING:
      raise ValueError(f"unknown downsampling {downsampling!r}; known: {DOWNSAMPLING}")
    return WideResNet(depth, width, num_classes, dropout_rate=dropout_rate,
                      downsampling=downsampling, dtype=dtype, conv=conv)
  return factory


def factory(name: str) -> Factory:
  """The factory registered as `name` (or the Wide ResNet it names); ValueError if none."""
  if name in _REGISTRY:
    return _REGISTRY[name]
  match = _WRN.match(name)
  if match:
    depth, width = int(match[1]), int(match[2])
    if (depth - 4) % 6 or depth < 10 or width < 1:
      raise ValueError(f"invalid Wide ResNet {name!r}: depth must be 6n + 4 (10, 16, 22, 28, ...) "
                       "and width >= 1")
    return _wide_resnet(depth, width)
  raise ValueError(f"unknown model {name!r}; known: {', '.join(names())} (register your own "
                   "with smjax.models.register at the top level of your experiment module)")


def get(name: str, num_classes: int, **options) -> nn.Module:
  """Builds model `name` for `num_classes`, passing the `options` its factory accepts."""
  build = factory(name)
  parameters = inspect.signature(build).parameters
  if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
    options = {k: v for k, v in options.items() if k in parameters}
  return build(num_classes, **options)


def options(config) -> dict:
  """The options a `Config` gives `get` (each model takes those its factory names)."""
  return {"dtype": jnp.dtype(config.dtype),
          "conv": winograd.conv_function(config.conv_algorithm, config.dtype),
          "dropout_rate": config.dropout_rate, "downsampling": config.downsampling}


def from_config(config, num_classes: int) -> nn.Module:
  """`config.model` for `num_classes`, with the config's options."""
  return get(config.model, num_classes, **options(config))


def check_config(config) -> None:
  """ValueError (one line) unless `config`'s model and its options build."""
  check_choice(config, "conv_algorithm", winograd.ALGORITHMS)
  if config.conv_algorithm == "winograd" and config.dtype != "float32":
    raise ValueError("conv_algorithm 'winograd' computes in float32; use dtype=float32 or "
                     "conv_algorithm=auto")
  from_config(config, 10)


def with_axis_name(model: nn.Module, axis_name: str | None) -> nn.Module:
  """`model` with its `axis_name` field set (cross-device BatchNorm); as is without the field."""
  if any(f.name == "axis_name" for f in dataclasses.fields(model)):
    return model.clone(axis_name=axis_name)
  return model


def layer_order(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
  """Names ('stage1_block1/conv1', ...) of the conv and dense layers in forward order.

  Param dicts come back sorted by name; this traces one abstract forward pass instead.
  """
  import jax
  import jax.numpy as jnp
  order = []

  def record(next_fun, args, kwargs, context):
    if context.method_name == "__call__" and isinstance(context.module, (nn.Conv, nn.Dense)):
      name = "/".join(context.module.path)
      if name not in order:
        order.append(name)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *input_shape)), train=False))
  return order

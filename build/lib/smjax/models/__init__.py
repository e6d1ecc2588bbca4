"""Plain flax.linen classifiers behind a name registry.

Every model is called as `model.apply(variables, x, train=...)` with
x: [batch, height, width, channels] and returns logits [batch, num_classes].
Each has an `axis_name` field for cross-device BatchNorm and a compute `dtype`.
"""

from __future__ import annotations

import re

import flax.linen as nn

from smjax.models.small import MLP, ConvNet, LeNet5
from smjax.models.wide_resnet import DOWNSAMPLING, WideResNet

_FIXED = {
    "lenet300-100": lambda n, **kw: MLP((300, 100), n, **kw),
    "lenet5": lambda n, **kw: LeNet5(n, **kw),
    "conv2": lambda n, **kw: ConvNet(1, n, **kw),
    "conv4": lambda n, **kw: ConvNet(2, n, **kw),
    "conv6": lambda n, **kw: ConvNet(3, n, **kw),
}
_WRN = re.compile(r"wrn(\d+)-(\d+)$")
NAMES = tuple(_FIXED) + ("wrnD-K (D = 6n + 4, e.g. wrn16-4, wrn28-10)",)


def get(name: str, num_classes: int, **kwargs) -> nn.Module:
  """Builds a model by name: `lenet300-100`, `lenet5`, `conv2/4/6` or `wrnD-K`.

  kwargs go to the module: `dtype` and `conv` (a `lax.conv_general_dilated` stand-in, e.g.
  `winograd.conv_general_dilated`) for all; `dropout_rate` and `downsampling`
  ("stride" | "maxpool") for Wide ResNets.
  """
  if name in _FIXED:
    return _FIXED[name](num_classes, **kwargs)
  match = _WRN.match(name)
  if match:
    depth, width = int(match[1]), int(match[2])
    if (depth - 4) % 6 or depth < 10 or width < 1:
      raise ValueError(f"invalid Wide ResNet {name!r}: depth must be 6n + 4 (10, 16, 22, 28, ...) "
                       "and width >= 1")
    if kwargs.get("downsampling", "stride") not in DOWNSAMPLING:
      raise ValueError(f"unknown downsampling {kwargs['downsampling']!r}; known: {DOWNSAMPLING}")
    return WideResNet(depth, width, num_classes, **kwargs)
  raise ValueError(f"unknown model {name!r}; known: {', '.join(NAMES)}")


def is_known(name: str) -> bool:
  try:
    get(name, 10)
  except ValueError:
    return False
  return True


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

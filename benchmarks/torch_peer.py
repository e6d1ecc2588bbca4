"""The PyTorch way, for comparison: WRN-16-4 and Conv-2/4/6 train steps with a custom autograd mask.

Optional (`pip install torch==2.13.0`; torch is not a dependency of smjax). Used by
`python -m benchmarks.suite --torch`, which times these steps interleaved with the JAX ones
in the same process. The networks match `smjax.models.get`: WRN-16-4 with pre-activation
blocks, 1x1 projection shortcuts, BN, global average pooling; Conv-2/4/6 with pairs of 3x3 convs
and max-pooling, then dense 256-256-classes. In mask mode every conv and linear weight is frozen
and masked by `1[sigmoid(score) > 0.5]` with the straight-through gradient `g * sigmoid'(score)`
and the scores train with Adam; in weight mode (Conv nets) the weights train with Adam, as in
experiments.zhou. BN running statistics update.
"""

from __future__ import annotations

import os
import time

import torch
from torch import nn
import torch.nn.functional as F


class ThresholdMask(torch.autograd.Function):
  @staticmethod
  def forward(ctx, scores):
    ctx.save_for_backward(scores)
    return (torch.sigmoid(scores) > 0.5).to(scores.dtype)

  @staticmethod
  def backward(ctx, grad):
    (scores,) = ctx.saved_tensors
    p = torch.sigmoid(scores)
    return grad * p * (1 - p)


class MaskedConv(nn.Conv2d):
  def __init__(self, *args, **kwargs):
    super().__init__(*args, bias=False, **kwargs)
    self.weight.requires_grad_(False)
    self.scores = nn.Parameter(torch.ones_like(self.weight))

  def forward(self, x):
    return self._conv_forward(x, self.weight * ThresholdMask.apply(self.scores), None)


class MaskedLinear(nn.Linear):
  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.weight.requires_grad_(False)
    self.bias.requires_grad_(False)
    self.scores = nn.Parameter(torch.ones_like(self.weight))

  def forward(self, x):
    return F.linear(x, self.weight * ThresholdMask.apply(self.scores), self.bias)


class ConvNet(nn.Module):
  """Conv-2/4/6 (`conv_pairs` = 1, 2, 3), masked (its conv and linear weights frozen, scores
  trained) or plain."""

  def __init__(self, conv_pairs: int, masked: bool, num_classes: int = 10):
    super().__init__()
    conv = (lambda i, o: MaskedConv(i, o, 3, 1, 1)) if masked else (
        lambda i, o: nn.Conv2d(i, o, 3, 1, 1))
    linear = MaskedLinear if masked else nn.Linear
    layers, cin = [], 3
    for pair in range(conv_pairs):
      cout = 64 * 2**pair
      layers += [conv(cin, cout), nn.ReLU(), conv(cout, cout), nn.ReLU(), nn.MaxPool2d(2)]
      cin = cout
    side = 32 // 2**conv_pairs
    self.features = nn.Sequential(*layers)
    self.classifier = nn.Sequential(linear(cin * side * side, 256), nn.ReLU(), linear(256, 256),
                                    nn.ReLU(), linear(256, num_classes))

  def forward(self, x):
    return self.classifier(self.features(x).flatten(1))


class Block(nn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
    self.conv1 = MaskedConv(cin, cout, 3, stride, 1)
    self.conv2 = MaskedConv(cout, cout, 3, 1, 1)
    self.shortcut = MaskedConv(cin, cout, 1, stride, 0) if cin != cout or stride != 1 else None

  def forward(self, x):
    pre = F.relu(self.bn1(x))
    y = self.conv2(F.relu(self.bn2(self.conv1(pre))))
    return y + (self.shortcut(pre) if self.shortcut is not None else x)


class WideResNet(nn.Module):
  def __init__(self, depth=16, width=4, num_classes=10):
    super().__init__()
    n = (depth - 4) // 6
    self.stem = MaskedConv(3, 16, 3, 1, 1)
    blocks, cin = [], 16
    for stage, cout in enumerate((16 * width, 32 * width, 64 * width)):
      for b in range(n):
        blocks.append(Block(cin, cout, 2 if stage > 0 and b == 0 else 1))
        cin = cout
    self.blocks = nn.Sequential(*blocks)
    self.bn = nn.BatchNorm2d(cin)
    self.head = MaskedLinear(cin, num_classes)

  def forward(self, x):
    x = F.relu(self.bn(self.blocks(self.stem(x))))
    return self.head(x.mean((2, 3)))


MODELS = {"wrn16-4": lambda masked: WideResNet(), "conv2": lambda masked: ConvNet(1, masked),
          "conv4": lambda masked: ConvNet(2, masked), "conv6": lambda masked: ConvNet(3, masked)}


def make_step(batch: int, channels_last: bool, name: str = "wrn16-4", masked: bool = True):
  """A closure running one train step (mask mode, or weight mode for the Conv nets); returns
  its seconds."""
  torch.manual_seed(0)
  model = MODELS[name](masked)
  for m in model.modules():  # BN affine frozen, as in smjax's mask mode
    if isinstance(m, nn.BatchNorm2d):
      m.weight.requires_grad_(False)
      m.bias.requires_grad_(False)
  x = torch.randn(batch, 3, 32, 32)
  y = torch.randint(0, 10, (batch,))
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
  model.train()

  def step() -> float:
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start

  return step


def calls(batch: int, name: str = "wrn16-4", modes=("mask",)) -> dict:
  """{variant: step} for the suite: torch/nchw and torch/channels_last in mask mode, and
  torch/weight/... for the Conv nets when `modes` has weight."""
  torch.set_num_threads(os.cpu_count())
  steps = {}
  for mode in [m for m in modes if m == "mask" or name != "wrn16-4"]:
    prefix = "torch" if mode == "mask" else "torch/weight"
    steps[f"{prefix}/nchw"] = make_step(batch, False, name, mode == "mask")
    steps[f"{prefix}/channels_last"] = make_step(batch, True, name, mode == "mask")
  return steps

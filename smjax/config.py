"""The one config object of a run: a frozen dataclass, validated, overridable by `key=value`."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Iterable

MODES = ("mask", "weight", "finetune")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "plateau")
PROTOCOLS = ("clean", "original")
WEIGHT_INITS = ("default", "signed_constant")
DTYPES = ("float32", "bfloat16")
PLACE_ONLY = ("data_dir",)
RECORDING_ONLY = ("tensorboard", "tensorboard_every_steps")  # what is logged, not computed
FINETUNE_ONLY = ("finetune_optimizer", "finetune_lr", "finetune_epochs", "original_finetune",
                 "mask_run", "start_epochs", "prune_from", "reinit_seed", "random_mask_seed",
                 "rewind_from")
# Which runs a study trains, and how many checkpoints a run keeps: never what one run computes.
STUDY_ONLY = ("ticket_rounds", "ticket_controls", "finetune_controls", "equal_compute",
              "original_control", "keep_every_epochs")
PRUNING = ("prune_rate", "prune_rate_output", "prune_scope", "rewind_epoch")  # a ticket round's start
TICKET_CONTROLS = ("reinit", "random")
FINETUNE_CONTROLS = ("random", "reinit")


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that decides a run. Fields are documented by their names and the README."""
  seed: int = 0
  # Data.
  dataset: str = "digits"
  data_dir: str = ""                  # original files or tfds; "" = $SMJAX_DATA_DIR, $TFDS_DATA_DIR
  val_size: float = -1.0              # -1 dataset default; >= 1 examples; (0, 1) fraction; 0 none
  # Model.
  model: str = "conv2"
  dropout_rate: float = 0.0
  downsampling: str = "stride"        # Wide ResNets: "stride" | "maxpool" (keras-contrib)
  dtype: str = "float32"              # compute dtype; params and scores stay float32
  conv_algorithm: str = "auto"        # 3x3 convs: "winograd" | "xla"; auto: winograd on CPU f32
  # Masks.
  mode: str = "mask"
  estimator: str = "threshold"
  threshold: float = 0.5
  topk_fraction: float = 0.5          # fraction of weights KEPT per layer
  score_init: str = "constant"
  score_init_value: float = 1.0
  mask_biases: bool = False
  mask_layers: str = "all"            # which kernels get a mask: all | conv | dense | hidden (all
                                      # but the first and last layer) | a rule you register
                                      # (smjax.masking.register_mask_rule)
  dynamic_rescale: bool = False       # Zhou et al.'s DWR: a layer's kept weights scaled by its
                                      # size over its kept count (mask and finetune modes)
  weight_init: str = "default"
  train_bn_with_mask: bool = False    # BN affine trains in mask mode (the blog code did)
  sampled_mask_evals: int = 0         # mask mode: also test N masks drawn by the estimator, at
                                      # each new best epoch and the last (the reported ones)
  # Optimisation.
  optimizer: str = "sgd"              # for weights (and BN affine)
  lr: float = 0.01                    # for weights
  score_optimizer: str = "adam"       # for scores: plain SGD at lr 0.01 leaves a mask unchanged
  score_lr: float = 0.01              # for scores (Adam 1e-2: the blog; SGD 100: Zhou et al.)
  momentum: float = 0.9
  weight_decay: float = 0.0
  schedule: str = "constant"
  plateau_patience: int = 2           # epochs, on training accuracy
  plateau_factor: float = 0.1
  batch_size: int = 128
  eval_batch_size: int = 500
  steps_per_call: int = 1             # > 1: lax.scan over that many steps per compiled call
  keep_every_epochs: int = 0          # also keep every N-th epoch's checkpoint (0: latest + best)
  tensorboard: bool = True            # TensorBoard event files in the run directory
  tensorboard_every_steps: int = 50   # ... with the training loss every N steps
  epochs: int = 30
  # Augmentation, on device, per example.
  crop_padding: int = 0               # pixels of black padding, then a random crop (CIFAR-10: 4)
  flip: bool = False
  max_translate: float = 0.0          # fraction of the image size
  max_rotate: float = 0.0             # degrees
  # Protocol and regimes.
  protocol: str = "clean"             # "clean": best on validation; "original": best on test
  finetune_optimizer: str = ""        # "" = the weight runs' optimizer
  finetune_lr: float = 1e-5
  finetune_epochs: int = 30
  original_finetune: bool = False     # --regime all also fine-tunes as the published code did
                                      # (Adam, lr 1e-5, finetune_epochs) in finetune_original/
  mask_run: str = ""                  # finetune: the run directory to start from (a mask
                                      # run; a weight run for the weight_original control)
  start_epochs: int = 0               # finetune: start from mask_run's best epoch among its
                                      # first N (0: all); needs that checkpoint kept
  # The controls that decide whether a supermask is a good initialization (docs/results/).
  finetune_controls: str = ""         # --regime all also fine-tunes, like finetune: "random"
                                      # (the supermask's per-layer counts at random places, same
                                      # init) and/or "reinit" (the supermask on another seed's init)
  equal_compute: bool = False         # --regime all: weight trains epochs + finetune_epochs, so
                                      # it is read at equal total epochs too (constant schedule)
  original_control: bool = False      # with original_finetune: also weight_original, the weight
                                      # run continued at the source's fine-tune (Adam 1e-5)
  # Lottery tickets (--regime tickets; smjax/tickets.py).
  ticket_rounds: int = 10             # rounds of pruning after the weight run (round0)
  prune_rate: float = 0.2             # share of a hidden layer's survivors pruned per round
  prune_rate_output: float = 0.1      # ... of the output layer's (Frankle & Carbin, FC nets)
  prune_scope: str = "layer"          # "layer" | "global" (all layers ranked at prune_rate)
  rewind_epoch: int = 0               # survivors rewound to the init (0) or to round0's weights
                                      # after this epoch ("late rewinding", Frankle et al. 2020)
  ticket_controls: str = "reinit,random"  # per round also: the mask with freshly drawn weights,
                                      # a random mask with the ticket's per-layer densities
  prune_from: str = ""                # finetune: prune this run's best weights for the mask
  rewind_from: str = ""               # finetune: ... and start from this run's rewind_epoch weights
  reinit_seed: int = -1               # >= 0: initial weights from this seed (the control)
  random_mask_seed: int = -1          # >= 0: the pruned mask's counts, at random places (control)

  def replace(self, **kwargs) -> "Config":
    return dataclasses.replace(self, **kwargs)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def identity(self) -> dict[str, Any]:
    """The fields that decide what this run computes: a run directory holds one identity.

    Where the data lies is not part of it, nor, outside finetune mode, how a later fine-tune
    of the same init would go."""
    ignored = PLACE_ONLY + RECORDING_ONLY + STUDY_ONLY + (
        FINETUNE_ONLY + PRUNING if self.mode != "finetune" else ())
    return {k: v for k, v in self.to_dict().items() if k not in ignored}

  @property
  def best_metric(self) -> str:
    return best_metric(self.protocol)


def best_metric(protocol: str) -> str:
  """What ranks checkpoints: the source's protocol selects by test accuracy, ours by validation."""
  return "test_accuracy" if protocol == "original" else "val_accuracy"


def with_overrides(config: Config, overrides: Iterable[str]) -> Config:
  """Applies `key=value` strings; unknown keys and ill-typed values are refused."""
  fields = {f.name: f for f in dataclasses.fields(Config)}
  changes = {}
  for item in overrides:
    key, sep, raw = item.partition("=")
    if not sep:
      raise ValueError(f"--set expects key=value, got {item!r}")
    if key not in fields:
      raise ValueError(f"unknown config key {key!r}; known: {', '.join(fields)}")
    changes[key] = _parse(key, raw, type(getattr(config, key)))
  return config.replace(**changes)


def from_dict(values: dict[str, Any]) -> Config:
  known = {f.name for f in dataclasses.fields(Config)}
  return Config(**{k: v for k, v in values.items() if k in known})


SECONDARY_REGIMES = ("finetune_reinit", "finetune_original", "weight_original")  # not C1-C3


def all_regimes(config: Config) -> tuple[str, ...]:
  """The runs of `--regime all`, in the order they start (a study: see `run.train_seeds`)."""
  chosen = config.finetune_controls.split(",")
  controls = tuple(f"finetune_{c}" for c in FINETUNE_CONTROLS if c in chosen)
  original = ("finetune_original",) if config.original_finetune else ()
  return (("mask", "weight", "finetune") + controls + original +
          (("weight_original",) if original and config.original_control else ()))


def _parse(key: str, raw: str, kind: type) -> Any:
  if kind is str:
    return raw
  try:
    value = json.loads(raw.lower() if kind is bool else raw)
  except json.JSONDecodeError:
    value = None
  if kind is float and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if kind is float and isinstance(value, float) and not math.isfinite(value):
    raise ValueError(f"config key {key!r} expects a finite number, got {raw!r}")
  if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
    raise ValueError(f"config key {key!r} expects {kind.__name__}, got {raw!r}")
  return value


def check_choice(config: Config, key: str, allowed) -> None:
  """ValueError naming `key`'s value and the allowed ones unless it is one of `allowed`."""
  if getattr(config, key) not in allowed:
    raise ValueError(f"unknown {key} {getattr(config, key)!r}; known: {', '.join(allowed)}")


def validate(config: Config) -> None:
  """Raises ValueError with one line naming the bad value and what is allowed: the checks of the
  fields themselves. What needs the registries (dataset, model, estimator, mask rule, conv
  algorithm) is checked beside them: `smjax.run.validate` runs all."""
  for key, allowed in (("mode", MODES), ("optimizer", OPTIMIZERS),
                       ("score_optimizer", OPTIMIZERS), ("finetune_optimizer", ("",) + OPTIMIZERS),
                       ("prune_scope", ("layer", "global")), ("schedule", SCHEDULES),
                       ("protocol", PROTOCOLS), ("weight_init", WEIGHT_INITS), ("dtype", DTYPES)):
    check_choice(config, key, allowed)
  positive = {"lr": config.lr, "score_lr": config.score_lr, "finetune_lr": config.finetune_lr}
  for key, value in positive.items():
    if not value > 0:
      raise ValueError(f"{key} must be > 0, got {value}")
  for key in ("epochs", "finetune_epochs", "batch_size", "eval_batch_size", "plateau_patience",
              "steps_per_call", "ticket_rounds", "tensorboard_every_steps"):
    if getattr(config, key) < 1:
      raise ValueError(f"{key} must be >= 1, got {getattr(config, key)}")
  ranges = {"topk_fraction": (0.0, 1.0), "threshold": (0.0, 1.0), "momentum": (0.0, 1.0),
            "dropout_rate": (0.0, 1.0), "max_translate": (0.0, 1.0), "plateau_factor": (0.0, 1.0),
            "prune_rate": (0.0, 0.99), "prune_rate_output": (0.0, 0.99)}
  for key, (lo, hi) in ranges.items():
    value = getattr(config, key)
    if not lo <= value <= hi:
      raise ValueError(f"{key} must be in [{lo}, {hi}], got {value}")
  for key in ("seed", "weight_decay", "max_rotate", "keep_every_epochs", "sampled_mask_evals",
              "crop_padding", "rewind_epoch", "start_epochs"):
    if getattr(config, key) < 0:
      raise ValueError(f"{key} must be >= 0, got {getattr(config, key)}")
  if config.rewind_epoch > config.epochs:
    raise ValueError(f"rewind_epoch {config.rewind_epoch} is past the weight run's {config.epochs} epochs")
  for control in filter(None, config.ticket_controls.split(",")):
    if control not in TICKET_CONTROLS:
      raise ValueError(f"unknown ticket control {control!r} in ticket_controls; known: "
                       f"{', '.join(TICKET_CONTROLS)} (comma-separated, or empty for none)")
  for control in filter(None, config.finetune_controls.split(",")):
    if control not in FINETUNE_CONTROLS:
      raise ValueError(f"unknown finetune control {control!r} in finetune_controls; known: "
                       f"{', '.join(FINETUNE_CONTROLS)} (comma-separated, or empty for none)")
  if config.equal_compute and config.schedule != "constant":
    raise ValueError(f"equal_compute extends the weight run, which continues a run only under "
                     f"schedule 'constant', not {config.schedule!r}")
  if config.topk_fraction == 0:
    raise ValueError("topk_fraction (the fraction kept) must be > 0")
  if config.val_size < 0 and config.val_size != -1:
    raise ValueError(f"val_size must be -1 (default), 0, a fraction or a count, got {config.val_size}")
  if config.protocol == "clean" and config.val_size == 0:
    raise ValueError("protocol 'clean' picks the best checkpoint on a validation split; "
                     "val_size=0 needs protocol=original")

"""Datasets held in memory (uint8 images, or float arrays), and batching by index gather.

Datasets are registered by name (`register`; its docstring has the contract). `mnist` and `cifar10` come from their original distribution files in `data_dir`
(or `$SMJAX_DATA_DIR`; see `dataset_files`), else from a prepared
tensorflow-datasets directory (`data_dir` or `$TFDS_DATA_DIR`); `digits` is
scikit-learn's `load_digits` (1,797 real 8x8 handwritten digits, shipped inside
the package), the offline default.
Batches come shaped for the pmapped step: [devices, per_device, ...].
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Iterator

import numpy as np

from smjax import dataset_files
from smjax.config import check_choice

DIGITS_TEST_SIZE = 360


class DataError(RuntimeError):
  """A dataset that cannot be loaded here (e.g. not prepared on an offline machine)."""


@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray  # [n, height, width, channels] uint8
  labels: np.ndarray  # [n] int32

  def __len__(self) -> int:
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  train: Split
  val: Split | None
  test: Split
  num_classes: int

  @property
  def input_shape(self) -> tuple[int, int, int]:
    return tuple(self.train.images.shape[1:])


@dataclasses.dataclass(frozen=True)
class Source:
  """How a dataset name loads, and how its pixels become the network's input:
  `(images / scale - mean) / std`, per channel."""
  load: Callable[[str], tuple]  # data_dir -> (train_images, train_labels, test_images, test_labels)
  mean: tuple[float, ...]
  std: tuple[float, ...]
  val_size: float = 0.1  # the default validation hold-out (a count >= 1 or a fraction)
  scale: float = 255.0
  num_classes: int | None = None  # None: the largest label + 1


def _files_or_tfds(name: str) -> Callable[[str], tuple]:
  return lambda data_dir: _arrays(*_load_files_or_tfds(name, data_dir))


_SOURCES: dict[str, Source] = {
    "digits": Source(lambda data_dir: _arrays(*_load_digits()), (0.3053,), (0.3760,), 0.1,
                     num_classes=10),
    "mnist": Source(_files_or_tfds("mnist"), (0.1307,), (0.3081,), 5000, num_classes=10),
    "cifar10": Source(_files_or_tfds("cifar10"), (0.4914, 0.4822, 0.4465),
                      (0.2470, 0.2435, 0.2616), 5000, num_classes=10),
}
BUILT_IN = tuple(_SOURCES)


def _arrays(train: Split, test: Split) -> tuple:
  return train.images, train.labels, test.images, test.labels


def register(name: str, load: Callable[[str], tuple], *, mean=(0.0,), std=(1.0,),
             scale: float = 255.0, val_size: float = 0.1, num_classes: int | None = None) -> None:
  """Makes `name` a dataset of every command (`--set dataset=NAME`).

  `load(data_dir)` returns (train_images, train_labels, test_images, test_labels) as arrays:
  images [n, height, width, channels] (or [n, height, width]: one channel), uint8 or float;
  labels integers in [0, num_classes). The network sees `(images / scale - mean) / std` per
  channel (mean and std: one value or one per channel; uint8 pixels: scale 255 and the
  training images' mean and std in [0, 1]; float features already standardised: scale 1, mean
  0, std 1). `val_size` is held out of the training arrays, stratified, the same for every
  seed (`--set val_size=` overrides it). Register at the top level of your experiment module,
  so that worker processes (`--jobs`) register it too; a built-in name may not be replaced."""
  if name in BUILT_IN:
    raise ValueError(f"{name!r} is a built-in dataset; register yours under another name")
  if not callable(load):
    raise TypeError(f"the loader of dataset {name!r} must be callable, got {load!r}")
  _SOURCES[name] = Source(load, tuple(np.atleast_1d(mean).tolist()),
                          tuple(np.atleast_1d(std).tolist()), val_size, float(scale), num_classes)


def names() -> tuple[str, ...]:
  """The dataset names `load` takes."""
  return tuple(_SOURCES)


def check_config(config) -> None:
  """ValueError (one line) unless `config`'s dataset is registered."""
  check_choice(config, "dataset", names())


def source(name: str) -> Source:
  """The registered `Source` of `name`; ValueError naming the known ones if none."""
  if name not in _SOURCES:
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(_SOURCES)} (register your own "
                     "with smjax.data.register at the top level of your experiment module)")
  return _SOURCES[name]


def _split(name: str, which: str, images, labels, num_classes: int | None) -> Split:
  """A loader's arrays as a Split, or one DataError line saying what is wrong."""
  images, labels = np.asarray(images), np.asarray(labels)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels) or not len(labels):
    raise DataError(f"dataset {name!r}: the {which} split must be images [n, height, width"
                    f"(, channels)] and labels [n] with n > 0; got {images.shape} and {labels.shape}")
  if images.dtype != np.uint8:
    images = images.astype(np.float32)
  if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or (
      num_classes is not None and labels.max() >= num_classes):
    raise DataError(f"dataset {name!r}: {which} labels must be integers in [0, "
                    f"{num_classes if num_classes is not None else 'num_classes'}); got "
                    f"{labels.dtype} in [{labels.min()}, {labels.max()}]")
  return Split(images, labels.astype(np.int32))


def load(name: str, *, data_dir: str = "", val_size: float = -1, split_seed: int = 0) -> Dataset:
  """Loads a dataset and holds out a stratified validation split from its training data.

  val_size: -1 the dataset default (5,000 for mnist/cifar10, 10% for digits);
  >= 1 a count; in (0, 1) a fraction; 0 no validation split. The split depends
  only on `split_seed`, so runs with different seeds share it.
  """
  src = source(name)
  arrays = src.load(data_dir)
  if not (isinstance(arrays, (tuple, list)) and len(arrays) == 4):
    raise DataError(f"dataset {name!r}: its loader must return (train_images, train_labels, "
                    f"test_images, test_labels); got {type(arrays).__name__}")
  train = _split(name, "train", *arrays[:2], src.num_classes)
  test = _split(name, "test", *arrays[2:], src.num_classes)
  if train.images.shape[1:] != test.images.shape[1:]:
    raise DataError(f"dataset {name!r}: train images are {train.images.shape[1:]}, test images "
                    f"{test.images.shape[1:]}")
  num_classes = src.num_classes or int(max(train.labels.max(), test.labels.max())) + 1
  channels = train.images.shape[-1]
  if len(src.mean) not in (1, channels) or len(src.std) not in (1, channels):
    raise DataError(f"dataset {name!r}: mean and std need one value or {channels} (one per channel)")
  val_size = src.val_size if val_size == -1 else val_size
  if not val_size:
    return Dataset(name, train, None, test, num_classes)
  from sklearn.model_selection import train_test_split
  count = int(val_size) if val_size >= 1 else val_size
  if count >= len(train) or (val_size < 1 and round(val_size * len(train)) < 1):
    raise DataError(f"val_size {val_size:g} leaves no {'training' if count >= len(train) else 'validation'} "
                    f"examples: {name} has {len(train)} training examples; use a count below that "
                    "or a fraction in (0, 1)")
  train_idx, val_idx = train_test_split(np.arange(len(train)), test_size=count,
                                        stratify=train.labels, random_state=split_seed)
  take = lambda idx: Split(train.images[np.sort(idx)], train.labels[np.sort(idx)])
  return Dataset(name, take(train_idx), take(val_idx), test, num_classes)


def input_scaling(name: str) -> tuple[float, tuple[float, ...], tuple[float, ...]]:
  """(scale, mean, std): the network's input is `(images / scale - mean) / std`."""
  src = source(name)
  return src.scale, src.mean, src.std


def _load_digits() -> tuple[Split, Split]:
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split
  digits = load_digits()
  images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]  # [1797, 8, 8, 1]
  labels = digits.target.astype(np.int32)
  train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=DIGITS_TEST_SIZE,
                                         stratify=labels, random_state=0)
  return (Split(images[np.sort(train_idx)], labels[np.sort(train_idx)]),
          Split(images[np.sort(test_idx)], labels[np.sort(test_idx)]))


def _load_files_or_tfds(name: str, data_dir: str) -> tuple[Split, Split]:
  """The original files in data_dir or $SMJAX_DATA_DIR if there, else tfds's prepared data."""
  files_dir = data_dir or os.environ.get("SMJAX_DATA_DIR", "")
  try:
    paths = dataset_files.find(name, files_dir) if files_dir else None
    if paths is not None:
      return tuple(Split(*dataset_files.read_split(name, paths[split])) for split in ("train", "test"))
  except dataset_files.FileError as err:
    raise DataError(str(err)) from None
  return _load_tfds(name, data_dir)


def _load_tfds(name: str, data_dir: str) -> tuple[Split, Split]:
  import absl.logging
  import tensorflow_datasets as tfds
  absl.logging.set_verbosity(absl.logging.ERROR)  # tfds warns about metadata it does not need
  data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
  try:
    sources = [tfds.data_source(name, split=split, data_dir=data_dir, download=False)
               for split in ("train", "test")]
  except (tfds.core.DatasetNotFoundError, KeyError, NotImplementedError, AssertionError):
    where = data_dir or os.environ.get("SMJAX_DATA_DIR") or tfds.core.constants.DATA_DIR
    raise DataError(
        f"dataset {name!r}: neither its original files nor a prepared tfds copy found in {where}; "
        f"either put the original files in a folder and pass --set data_dir=DIR (or set "
        f"SMJAX_DATA_DIR), or prepare it with tfds (tfds build {name} --file_format array_record "
        f"--data_dir DIR) and pass that DIR (or set TFDS_DATA_DIR)") from None
  return tuple(_read_split(source) for source in sources)


def _read_split(source) -> Split:
  examples = [source[i] for i in range(len(source))]
  images = np.stack([np.asarray(e["image"], np.uint8) for e in examples])
  labels = np.asarray([e["label"] for e in examples], np.int32)
  return Split(images, labels)


# --------------------------------------------------------------------------
# Batching.


def check_batch_size(batch_size: int, num_devices: int, process_count: int = 1) -> None:
  """A global batch must split evenly across every device of every process."""
  total = num_devices * process_count
  if batch_size % total:
    raise ValueError(f"batch_size {batch_size} does not split across {total} devices; "
                     f"use a multiple of {total}")


def steps_per_epoch(split: Split, batch_size: int) -> int:
  return len(split) // batch_size


def _shard(array: np.ndarray, num_devices: int | None) -> np.ndarray:
  if num_devices is None:
    return array  # [batch, ...] for a single-device (jit) step
  return array.reshape(num_devices, -1, *array.shape[1:])  # [devices, per_device, ...]


def train_batches(split: Split, batch_size: int, *, seed: int, epoch: int,
                  num_devices: int | None = None,
                  process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
  """Shuffled training batches of one epoch; the remainder is dropped.

  The order is a function of (seed, epoch) only. Each process takes its own
  contiguous slice of every global batch. Yields {'image': uint8
  [devices, per_device, h, w, c], 'label': int32 [devices, per_device]}, or
  [batch, ...] without the device axis when `num_devices` is None.
  """
  check_batch_size(batch_size, num_devices or 1, process_count)
  order = np.random.default_rng([seed, epoch]).permutation(len(split))
  local = batch_size // process_count
  for step in range(steps_per_epoch(split, batch_size)):
    idx = np.sort(order[step * batch_size:(step + 1) * batch_size]
                  )[process_index * local:(process_index + 1) * local]  # any process count: same split
    yield {"image": _shard(split.images[idx], num_devices),
           "label": _shard(split.labels[idx], num_devices)}


def stack_batches(batches: Iterator[dict], k: int, axis: int = 1) -> Iterator[dict]:
  """Groups consecutive batches into one with a new [k] axis, every group of the same shape (one
  compiled program): the last group is padded with copies of its last batch, and
  'valid' (bool, the batch's leading axes up to the new one) marks the real steps.

  axis=1 puts it after the device axis: [devices, k, per_device, ...], 'valid' [devices, k].
  """
  def stacked(group):
    real = len(group)
    group = group + group[-1:] * (k - real)
    out = {key: np.stack([b[key] for b in group], axis) for key in group[0]}
    out["valid"] = np.broadcast_to(np.arange(k) < real, out["label"].shape[:axis + 1]).copy()
    return out

  group = []
  for batch in batches:
    group.append(batch)
    if len(group) == k:
      yield stacked(group)
      group = []
  if group:
    yield stacked(group)


def eval_batches(split: Split, batch_size: int, *, num_devices: int | None = None,
                 process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
  """Every example exactly once; the last batch is padded and its padding has weight 0.

  Yields the train batch fields plus 'weight': float32 [devices, per_device].
  """
  total = (num_devices or 1) * process_count
  batch_size = -(-batch_size // total) * total
  local = batch_size // process_count
  for start in range(0, len(split), batch_size):
    idx = np.arange(start, start + batch_size)[process_index * local:(process_index + 1) * local]
    valid = idx < len(split)
    idx = np.where(valid, idx, 0)
    yield {"image": _shard(split.images[idx], num_devices),
           "label": _shard(split.labels[idx], num_devices),
           "weight": _shard(valid.astype(np.float32), num_devices)}

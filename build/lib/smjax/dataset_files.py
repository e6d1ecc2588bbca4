"""MNIST and CIFAR-10 from their original distribution files, verified, without TensorFlow.

    MNIST:    train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-... (IDX, gzip or not)
    CIFAR-10: data_batch_1..5.bin, test_batch.bin (binary version: 1 label byte + 3072 pixel
              bytes per record, the R, G and B planes row-major)

`find(name, root)` looks in ROOT/<name>/, ROOT/cifar10/cifar-10-batches-bin/,
ROOT/cifar-10-batches-bin/ and ROOT itself. Every file is checked against its published size and
md5 the first time it is read; the check is remembered (by path, size and mtime) in
`$SMJAX_CACHE_DIR` (default ~/.cache/smjax), so later loads only read. numpy's `frombuffer` is
the whole reader: both formats are a fixed header followed by raw uint8.
"""

from __future__ import annotations

import gzip
import zlib
import hashlib
import json
import os
from pathlib import Path

import numpy as np

# file name -> (bytes, md5), from the datasets' own pages; MNIST also uncompressed.
CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte.gz": (9912422, "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "train-labels-idx1-ubyte.gz": (28881, "d53e105ee54ea40749a09fcbcd1e9432"),
        "t10k-images-idx3-ubyte.gz": (1648877, "9fb629c4189551a2d022fa330f9573f3"),
        "t10k-labels-idx1-ubyte.gz": (4542, "ec29112dd5afa0611ce80d1b7f02629c"),
        "train-images-idx3-ubyte": (47040016, "6bbc9ace898e44ae57da46a324031adb"),
        "train-labels-idx1-ubyte": (60008, "a25bea736e30d166cdddb491f175f624"),
        "t10k-images-idx3-ubyte": (7840016, "2646ac647ad5339dbf082846283269ea"),
        "t10k-labels-idx1-ubyte": (10008, "27ae3e4e09519cfbb04c329615203637"),
    },
    "cifar10": {
        "data_batch_1.bin": (30730000, "5dd7e06a14cb22eb9f671a540d1b7c25"),
        "data_batch_2.bin": (30730000, "5ea93a67294ea407fff1d09f752e9692"),
        "data_batch_3.bin": (30730000, "942cd6a4bcdd0dd3c604fbe906cb4421"),
        "data_batch_4.bin": (30730000, "ae636b3ba5c66a11e91e8cb52e771fcb"),
        "data_batch_5.bin": (30730000, "53f37980c15c3d472c316c40844f3f0d"),
        "test_batch.bin": (30730000, "803d5f7f4d78ea53de84dbe85f74fb6d"),
    },
}
# split -> the files it is read from, in order; MNIST files may come with or without .gz.
SPLITS = {
    "mnist": {"train": ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"],
              "test": ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]},
    "cifar10": {"train": [f"data_batch_{i}.bin" for i in range(1, 6)],
                "test": ["test_batch.bin"]},
}
SUBDIRS = {"mnist": ["mnist", "."], "cifar10": ["cifar10/cifar-10-batches-bin",
                                                "cifar-10-batches-bin", "cifar10", "."]}
CIFAR_RECORD = 1 + 32 * 32 * 3


class FileError(RuntimeError):
  """A distribution file that is missing, truncated, corrupt or not the published one."""


def find(name: str, root: str | os.PathLike) -> dict[str, list[Path]] | None:
  """{'train': [paths], 'test': [paths]} in the first folder under `root` that holds any of
  the dataset's files; None where none does. A folder with some files but not all is an error."""
  for sub in SUBDIRS[name]:
    folder = Path(root) / sub
    paths = {split: [_locate(folder, f) for f in files] for split, files in SPLITS[name].items()}
    found = [p for ps in paths.values() for p in ps if p is not None]
    if not found:
      continue
    missing = [f for split, files in SPLITS[name].items()
               for f, p in zip(files, paths[split]) if p is None]
    if missing:
      raise FileError(f"{folder} holds {name} files but not {', '.join(missing)}")
    return paths
  return None


def _locate(folder: Path, stem: str) -> Path | None:
  for candidate in (folder / stem, folder / f"{stem}.gz"):
    if candidate.is_file():
      return candidate
  return None


def read_bytes(path: Path, name: str) -> bytes:
  """The file's content, after checking it against its published size and md5 (once)."""
  path = Path(path)
  size, md5 = CHECKSUMS[name][path.name]
  found_size = path.stat().st_size
  if found_size != size:
    raise FileError(f"{path}: expected {size} bytes (md5 {md5}), found {found_size} bytes; "
                    "the file is truncated or not the published one, fetch it again")
  raw = path.read_bytes()
  stat = path.stat()
  stamp = [stat.st_size, stat.st_mtime_ns, md5]
  key = str(path.resolve())
  if _read_cache().get(key) != stamp:
    found_md5 = hashlib.md5(raw).hexdigest()
    if found_md5 != md5:
      raise FileError(f"{path}: expected md5 {md5}, found {found_md5}; the file is corrupt or "
                      "not the published one, fetch it again")
    _write_cache({**_read_cache(), key: stamp})
  return raw


def forget(path: Path) -> None:
  """Drops a file's remembered verification."""
  entries = _read_cache()
  if entries.pop(str(Path(path).resolve()), None) is not None:
    _write_cache(entries)


def cache_path() -> Path:
  return Path(os.environ.get("SMJAX_CACHE_DIR") or Path.home() / ".cache" / "smjax") / \
      "verified_files.json"


def _read_cache() -> dict:
  try:
    return json.loads(cache_path().read_text())
  except (OSError, ValueError):
    return {}


def _write_cache(entries: dict) -> None:
  """Best effort: a cache that cannot be written only costs a second md5 next time."""
  path = cache_path()
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
    os.replace(tmp, path)
  except OSError:
    pass


def parse_idx(raw: bytes, path: Path) -> np.ndarray:
  """IDX (big-endian header: 0, 0, type 0x08 = uint8, rank; then one uint32 per dim) -> uint8."""
  if path.suffix == ".gz":
    try:
      raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
      forget(path)  # verified once, changed since: the next read checks its md5 again
      raise FileError(f"{path}: not a readable gzip file ({err}); the file is corrupt, fetch it "
                      "again") from None
  if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
    raise FileError(f"{path}: not an IDX file of unsigned bytes (header {raw[:4].hex()})")
  rank = raw[3]
  shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", rank, 4))
  data = np.frombuffer(raw, np.uint8, offset=4 + 4 * rank)
  if data.size != int(np.prod(shape)):
    raise FileError(f"{path}: header says {shape}, found {data.size} values")
  return data.reshape(shape)


def parse_cifar(raw: bytes, path: Path) -> tuple[np.ndarray, np.ndarray]:
  """CIFAR-10 binary records -> (images [n, 32, 32, 3] uint8, labels [n] int32)."""
  if len(raw) % CIFAR_RECORD:
    raise FileError(f"{path}: {len(raw)} bytes is not a whole number of {CIFAR_RECORD}-byte records")
  records = np.frombuffer(raw, np.uint8).reshape(-1, CIFAR_RECORD)
  images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), records[:, 0].astype(np.int32)


def read_split(name: str, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
  """(images [n, h, w, c] uint8, labels [n] int32) of one split's verified files."""
  if name == "mnist":
    image_path, label_path = paths
    images = parse_idx(read_bytes(image_path, name), image_path)[..., None]
    labels = parse_idx(read_bytes(label_path, name), label_path).astype(np.int32)
    if len(images) != len(labels):
      raise FileError(f"{image_path}: {len(images)} images but {label_path} has {len(labels)} labels")
  else:
    parts = [parse_cifar(read_bytes(p, name), p) for p in paths]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
  if labels.size and labels.max() > 9:
    raise FileError(f"{paths[-1]}: labels must be 0-9, found {labels.max()}")
  return images, labels

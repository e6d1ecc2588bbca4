"""Mask algorithms over pytrees of binary masks: magnitude pruning and random masks of given
per-layer counts, and the seeds of the controls that use them (a random mask of a mask's
per-layer densities; the same mask on another seed's init). Tickets and the supermask-start
controls share them."""

from __future__ import annotations

import numpy as np
from flax import traverse_util

REINIT_SEED_OFFSET = 10_000  # a control's weights: another seed's init, same data order
RANDOM_MASK_SEED_OFFSET = 20_000  # a control's random mask, drawn from seed + this


def magnitude_masks(params, masks, rates: dict[str, float], scope: str = "layer"):
  """New binary masks keeping the largest |w| among each layer's survivors (`masks != 0`).

  rates: per layer name ('dense1/kernel'), the fraction of its survivors to prune
  (`scope="layer"`); with `scope="global"` the first rate is applied to all survivors ranked
  together. Exactly round(rate * survivors) are pruned; ties go to the earlier index.
  """
  flat_masks = traverse_util.flatten_dict(masks, sep="/")
  flat_params = traverse_util.flatten_dict(params, sep="/")
  names = list(flat_masks)
  alive = {n: np.asarray(flat_masks[n]).ravel() != 0 for n in names}
  magnitude = {n: np.abs(np.asarray(flat_params[n], np.float64)).ravel() for n in names}
  groups = [names] if scope == "global" else [[n] for n in names]
  if scope not in ("layer", "global"):
    raise ValueError(f"prune_scope must be 'layer' or 'global', got {scope!r}")
  kept = {}
  for group in groups:
    values = np.concatenate([np.where(alive[n], magnitude[n], -1.0) for n in group])
    survivors = int(sum(alive[n].sum() for n in group))
    keep_count = survivors - int(round(rates[group[0]] * survivors))
    order = np.argsort(-values, kind="stable")  # largest first; ties: earlier index first
    keep = np.zeros(values.size, bool)
    keep[order[:keep_count]] = True
    offsets = np.cumsum([0] + [alive[n].size for n in group])
    for i, n in enumerate(group):
      kept[n] = keep[offsets[i]:offsets[i + 1]].reshape(np.shape(flat_masks[n])).astype(np.float32)
  return traverse_util.unflatten_dict({tuple(n.split("/")): kept[n] for n in names})


def random_masks(masks, seed: int):
  """Masks keeping as many weights per layer as `masks`, at places drawn uniformly over the
  whole layer (the random-pruning control). One permutation per layer and seed, so masks of
  one seed at falling densities are nested."""
  flat = traverse_util.flatten_dict(masks, sep="/")
  out = {}
  for i, name in enumerate(sorted(flat)):
    mask = np.asarray(flat[name])
    keep = np.zeros(mask.size, np.float32)
    keep[np.random.default_rng([seed, i]).permutation(mask.size)[:int((mask != 0).sum())]] = 1
    out[name] = keep.reshape(mask.shape)
  return traverse_util.unflatten_dict({tuple(n.split("/")): m for n, m in out.items()})

"""Statistics of studies over seeds: summaries, paired t-intervals, equivalence tests, and how
many epochs of weight training a head start is worth. Pure functions of numbers; the reports
format them."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats

EQUIVALENCE_MARGIN = 0.005  # ±0.5 points of accuracy: "no difference" means within this


def mean_std(values: Sequence[float | None]) -> dict:
  """Mean and sample standard deviation (ddof = 1; None for one value); None values dropped."""
  values = [float(v) for v in values if v is not None]
  if not values:
    return {"n": 0, "mean": None, "std": None, "values": []}
  std = float(np.std(values, ddof=1)) if len(values) > 1 else None
  return {"n": len(values), "mean": float(np.mean(values)), "std": std, "values": values}


def paired_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict:
  """a - b seed by seed: mean, sample std and the two-sided t-interval of the mean,
  mean ± t_{(1 + confidence) / 2, n - 1} · std / sqrt(n) (None for fewer than two pairs)."""
  diffs = [x - y for x, y in zip(a, b, strict=True)]
  summary = mean_std(diffs)
  low = high = None
  if summary["n"] > 1:
    half = stats.t.ppf((1 + confidence) / 2, summary["n"] - 1) * summary["std"] / np.sqrt(summary["n"])
    low, high = summary["mean"] - half, summary["mean"] + half
  return {**summary, "confidence": confidence, "low": low, "high": high}


def equivalence_test(diffs: Sequence[float], margin: float = EQUIVALENCE_MARGIN,
                     alpha: float = 0.05) -> dict:
  """Two one-sided t-tests (TOST) of paired differences against the margin ±`margin`: the
  mean is equivalent to 0 when both H0: mean <= -margin and H0: mean >= +margin are rejected
  at `alpha` (the same as the (1 - 2 alpha) t-interval lying inside the margin). p is the larger
  one-sided p-value; None for fewer than two differences or no spread."""
  diffs = np.asarray(diffs, np.float64)
  if diffs.size < 2 or np.std(diffs) == 0:
    return {"margin": margin, "alpha": alpha, "p": None, "equivalent": None}
  p_low = stats.ttest_1samp(diffs, -margin, alternative="greater").pvalue
  p_high = stats.ttest_1samp(diffs, margin, alternative="less").pvalue
  p = float(max(p_low, p_high))
  return {"margin": margin, "alpha": alpha, "p": p, "equivalent": bool(p < alpha)}


def reaching_epoch(curve: Sequence[float], target: float) -> float | None:
  """The (fractional) epoch at which a per-epoch curve (epochs 1, 2, ...) first reaches
  `target`, interpolated linearly between the epochs around the crossing; 1 if its first
  epoch already does; None if it never does."""
  for i, value in enumerate(curve):
    if value >= target:
      if i == 0:
        return 1.0
      previous = curve[i - 1]
      return i + (target - previous) / (value - previous)
  return None


def epochs_worth(head_start: Sequence[float], weight: Sequence[float]) -> dict:
  """How many epochs of weight training a head start is worth: for each epoch k of the run
  from the head start (accuracy a_k), the epoch e_k at which the weight run first reaches a_k,
  and the mean of e_k - k. Epochs whose accuracy the weight run never reaches are counted
  (`censored`), not averaged: the mean is then a lower bound."""
  gains, censored = [], 0
  for k, accuracy in enumerate(head_start, start=1):
    reached = reaching_epoch(weight, accuracy)
    if reached is None:
      censored += 1
    else:
      gains.append(reached - k)
  return {"epochs": float(np.mean(gains)) if gains else None, "per_epoch": gains,
          "censored": censored}


def last_mean(curve: Sequence[float], k: int = 3) -> float:
  """The mean of a curve's last `k` values: an endpoint that does not hang on one noisy epoch."""
  if len(curve) < k:
    raise ValueError(f"a curve of {len(curve)} epochs has no last {k}")
  return float(np.mean(curve[-k:]))

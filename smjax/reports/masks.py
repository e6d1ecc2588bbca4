"""Per-layer mask tables of a run's checkpoints, read without model code."""

from __future__ import annotations

from pathlib import Path

from smjax import checkpoint, masking


def masked_share(layers: list[dict]) -> float:
  """The share of all masked-layer weights set to zero, from `masking.layer_stats` rows."""
  total = sum(layer["n_weights"] for layer in layers)
  zeros = sum(layer["n_weights"] * layer["masked_fraction"] for layer in layers)
  return zeros / total if total else 0.0


def layer_table(layers: list[dict], masked_cell, masked_header: str = "masked") -> list[str]:
  """Markdown rows of `masking.layer_stats`-like rows: layer | shape | weights | masked, the
  last cell written by `masked_cell(layer["masked_fraction"])`."""
  out = [f"| layer | shape | weights | {masked_header} |", "|---|---|---|---|"]
  for layer in layers:
    out.append(f"| {layer['name']} | {'x'.join(map(str, layer['shape']))} | "
               f"{layer['n_weights']:,} | {masked_cell(layer['masked_fraction'])} |")
  return out


def mask_table(run_dir: Path, step: int | None = None) -> dict:
  """{'step', 'epoch', 'masked_fraction', 'n_weights', 'layers': [...]} of one checkpoint
  (default: the best)."""
  restored = checkpoint.restore(run_dir, step=step)
  layers = masking.layer_stats(restored["masks"], restored["meta"].get("layers"))
  return {"step": restored["step"], "epoch": restored["meta"].get("epoch"),
          "masked_fraction": masked_share(layers),
          "n_weights": sum(layer["n_weights"] for layer in layers), "layers": layers}


def mask_history(run_dir: Path) -> list[dict]:
  """Per saved checkpoint, oldest first: step, epoch and the per-layer mask table."""
  rows = []
  for step in checkpoint.steps(run_dir):
    restored = checkpoint.restore(run_dir, step=step)
    meta = restored["meta"]
    rows.append({"step": step, "epoch": meta.get("epoch"), "partial": bool(meta.get("partial")),
                 "layers": masking.layer_stats(restored["masks"], meta.get("layers"))})
  return rows

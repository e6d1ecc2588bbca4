"""Inspect the checkpoints and masks of a run, without model code.

    python -m smjax.inspect WORKDIR                  # config, checkpoints, mask table of the best
    python -m smjax.inspect WORKDIR --step 120 --json
    python -m smjax.inspect WORKDIR --history        # % masked per layer at every checkpoint
    python -m smjax.inspect WORKDIR --compare OTHER  # Jaccard / Hamming / chance, per layer
    python -m smjax.inspect WORKDIR --export masks.npz [--scores]
    python -m smjax.inspect WORKDIR --export-model [FILE]         # the pruned network

WORKDIR is a single-mode run directory or a `--regime all` directory (whose mask/ run is then
the one inspected). Errors end with one line and exit code 2.

--export-model writes FILE (default RUN/export/model.msgpack): the effective variables for
flax's `model.apply`; FILE.stablehlo: the inference function (images as the dataset gives them
-> logits), which `jax.export.deserialize(open(F, "rb").read()).call(images)` runs with jax
alone; FILE.json: model, input layout, dtype and scaling, test accuracy, per-layer density. A
model or dataset of your own is found with `--import MODULE` (the module that registers it).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import absl.logging
import jax
import numpy as np

from smjax import checkpoint, masking, provenance
from smjax.reports import masks
from smjax.config import best_metric
from smjax.workdir import RunError, is_run, read_config, read_metrics


def resolve(workdir: str | Path) -> Path:
  """The single-mode run directory to inspect."""
  workdir = Path(workdir)
  if is_run(workdir):
    return workdir
  if is_run(workdir / "mask"):
    return workdir / "mask"
  raise checkpoint.CheckpointError(f"{workdir} is not a run directory (no config.json)")


def _pct(value) -> str:
  return "-" if value is None else f"{100 * value:6.2f}%"


def describe(run_dir: Path, step: int | None) -> str:
  config = read_config(run_dir)
  by_epoch = {m["epoch"]: m for m in read_metrics(run_dir)}
  saved = checkpoint.steps(run_dir)
  best = checkpoint.best_step(checkpoint.checkpoint_dir(run_dir),
                              best_metric(config.get("protocol", "")))
  out = [f"run {run_dir}: mode {config['mode']}, model {config['model']}, dataset "
         f"{config['dataset']}, estimator {config['estimator']}, seed {config['seed']}, "
         f"protocol {config['protocol']}, {len(by_epoch)}/{config['epochs']} epochs",
         *provenance_lines(provenance.read(run_dir)), "",
         "checkpoint  epoch   val acc  test acc    masked"]
  damaged = checkpoint.damaged_metrics(checkpoint.checkpoint_dir(run_dir))
  for s in sorted(saved + damaged):
    if s in damaged:
      out.append(f"{s:>10}  unreadable (its saved metrics are damaged)")
      continue
    try:
      epoch = checkpoint.read_meta(run_dir, s).get("epoch")
    except checkpoint.CheckpointError as err:
      if not (checkpoint.checkpoint_dir(run_dir) / str(s)).exists():
        out.append(f"{s:>10}  removed by the training run while this was read (rotated away)")
      elif s not in checkpoint.steps(run_dir):
        out.append(f"{s:>10}  being written by the training run")
      else:
        out.append(f"{s:>10}  unreadable: {err}")
      continue
    m = by_epoch.get(epoch, {}) if s == by_epoch.get(epoch, {}).get("step") else {}
    tags = ("best " if s == best else "") + ("latest" if s == saved[-1] else "")
    out.append(f"{s:>10}  {epoch:>5}  {_pct(m.get('val_accuracy'))}  {_pct(m.get('test_accuracy'))}"
               f"  {_pct(m.get('masked_fraction'))}  {tags if m else 'mid-epoch (stopped)'}")
  table = masks.mask_table(run_dir, step)
  out += ["", f"mask of checkpoint {table['step']} (epoch {table['epoch']}):",
          f"{'layer':40s} {'shape':>16s} {'weights':>12s}   masked"]
  for layer in table["layers"]:
    shape = "x".join(map(str, layer["shape"]))
    out.append(f"{layer['name']:40s} {shape:>16s} {layer['n_weights']:>12,d}  "
               f"{_pct(layer['masked_fraction'])}")
  out.append(f"{'total':40s} {'':>16s} {table['n_weights']:>12,d}  {_pct(table['masked_fraction'])}")
  return "\n".join(out)


def provenance_lines(sessions: list[dict]) -> list[str]:
  """One line per training session: when, on what, and what differs from the first."""
  if not sessions:
    return ["provenance: not recorded (a run started before provenance.json was kept)"]
  out = []
  for i, session in enumerate(sessions):
    differs = provenance.differences(sessions[0], session) if i else []
    note = f"; differs from the start in {', '.join(differs)}" if differs else ""
    started = "resumed (its start not recorded)" if session.get("start_unrecorded") else "started"
    out.append(f"{started if i == 0 else 'resumed'} {session['date']}: "
               f"{provenance.setting(session)}{note}")
  return out


def export(run_dir: Path, step: int | None, path: Path, scores: bool) -> int:
  """Writes the binary masks (and scores) as flat `name -> array` entries; returns the count."""
  restored = checkpoint.restore(run_dir, step=step)
  arrays = {f"masks/{k}": v for k, v in masking.flatten_masks(restored["masks"]).items()}
  if scores:
    flat = masking.flatten_masks(restored["state"]["trainable"]["scores"])
    arrays.update({f"scores/{k}": v for k, v in flat.items()})
  np.savez(path, **arrays)
  return len(arrays)


def export_model(run_dir: Path, step: int | None, path: Path) -> dict:
  """Writes a checkpoint's pruned network three ways: PATH, the effective variables (every
  kernel times its binary mask, biases, BN parameters and statistics) as flax msgpack for
  `model.apply`; PATH.stablehlo, its inference function serialized with `jax.export` (weights
  and masks baked in, batch dimension symbolic), which runs with jax alone; PATH.json, the
  model, the input it takes and the per-layer density."""
  from flax import serialization
  from smjax import config as config_lib, models
  restored = checkpoint.restore(run_dir, step=step)
  state, stored = restored["state"], read_config(run_dir)
  variables = {"params": jax.tree.map(np.asarray, masking.apply_masks(
      state["trainable"]["params"], restored["masks"], rescale=stored.get("dynamic_rescale", False)))}
  if state.get("batch_stats"):
    variables["batch_stats"] = state["batch_stats"]
  path.write_bytes(serialization.msgpack_serialize(variables))
  layer_rows = masking.layer_stats(restored["masks"], restored["meta"].get("layers"))
  layers = [{"name": layer["name"], "shape": layer["shape"], "n_weights": layer["n_weights"],
             "density": 1 - layer["masked_fraction"]} for layer in layer_rows]
  given = restored["meta"].get("input") or _built_in_input(stored["dataset"])
  config = config_lib.Config(**{k: v for k, v in stored.items()
                                if k in config_lib.Config.__dataclass_fields__})
  model = models.from_config(config, given["num_classes"])
  exported = _export_inference(model, variables, given)
  path.with_name(path.name + ".stablehlo").write_bytes(exported.serialize())
  metrics = {m["step"]: m for m in read_metrics(run_dir)}.get(restored["step"], {})
  info = {"workdir": str(run_dir), "step": restored["step"], "epoch": restored["meta"].get("epoch"),
          "model": config.model, "dataset": config.dataset,
          "test_accuracy": metrics.get("test_accuracy"),
          "input": {"layout": "NHWC: [batch, height, width, channels]", "shape": given["shape"],
                    "dtype": given["dtype"], "scale": given["scale"], "mean": given["mean"],
                    "std": given["std"],
                    "network_input": "(images / scale - mean) / std, per channel; the .stablehlo "
                                     "function takes the images as they are and does this itself"},
          "output": f"logits [batch, {given['num_classes']}]",
          "stablehlo": {"file": path.name + ".stablehlo", "platforms": list(exported.platforms),
                        "run": "jax.export.deserialize(open(FILE, 'rb').read()).call(images)"},
          "density": 1 - masks.masked_share(layer_rows), "layers": layers}
  path.with_name(path.name + ".json").write_text(json.dumps(info, indent=1) + "\n")
  return info


def _built_in_input(dataset: str) -> dict:
  """What a run written before checkpoints recorded their input took: a built-in dataset's."""
  from smjax import data
  scale, mean, std = data.input_scaling(dataset)
  shapes = {"digits": [8, 8, 1], "mnist": [28, 28, 1], "cifar10": [32, 32, 3]}
  return {"shape": shapes[dataset], "dtype": "uint8", "scale": scale, "mean": list(mean),
          "std": list(std), "num_classes": data.source(dataset).num_classes}


DEFAULT_EXPORT = Path("export/model.msgpack")  # inside the run directory
EXPORT_PLATFORMS = ("cpu", "cuda", "tpu")  # the exported function runs on any of them


def _export_inference(model, variables: dict, given: dict):
  """`jax.export` of images -> logits with `variables` as constants, for any batch size."""
  import jax.numpy as jnp
  constants = jax.tree.map(jnp.asarray, variables)
  mean, std = (jnp.asarray(given[k], jnp.float32) for k in ("mean", "std"))

  def infer(images):
    x = (images.astype(jnp.float32) / given["scale"] - mean) / std
    return model.apply(constants, x, train=False)

  batch, = jax.export.symbolic_shape("batch")
  spec = jax.ShapeDtypeStruct((batch, *given["shape"]), jnp.dtype(given["dtype"]))
  try:
    return jax.export.export(jax.jit(infer), platforms=EXPORT_PLATFORMS)(spec)
  except (NotImplementedError, ValueError):  # an op without a lowering for some platform
    return jax.export.export(jax.jit(infer))(spec)


def compare(run_dir: Path, other: Path, step: int | None) -> dict:
  a, b = checkpoint.restore(run_dir, step=step), checkpoint.restore(other)
  result = masking.compare_masks(a["masks"], b["masks"], a["meta"].get("layers"))
  first = [(provenance.read(d) or [None])[0] for d in (run_dir, other)]
  same = None if None in first else not provenance.differences(*first)
  return {"a": {"workdir": str(run_dir), "step": a["step"]},
          "b": {"workdir": str(other), "step": b["step"]}, **result,
          "provenance": {"same": same,
                         "differences": [] if None in first else provenance.differences(*first)}}


def _compare_text(result: dict) -> str:
  out = [f"{result['a']['workdir']} @ {result['a']['step']}  vs  "
         f"{result['b']['workdir']} @ {result['b']['step']}",
         f"{'layer':40s} {'jaccard':>8s} {'chance':>8s} {'hamming':>10s} {'agree':>8s} {'chance':>8s}"]
  for row in result["layers"] + [{"name": "total", **result["total"]}]:
    out.append(f"{row['name']:40s} {row['jaccard']:8.4f} {row['chance_jaccard']:8.4f} "
               f"{row['hamming']:10,d} {row['agreement']:8.4f} {row['chance_agreement']:8.4f}")
  same, differences = result["provenance"]["same"], result["provenance"]["differences"]
  out.append("provenance: " + ("not recorded for both runs" if same is None else
                               "the same code, software and machine" if same else
                               f"differs in {', '.join(differences)}"))
  return "\n".join(out)


def _history_text(history: list[dict]) -> str:
  names = [layer["name"] for layer in history[0]["layers"]] if history else []
  out = ["% masked per layer at each checkpoint", f"{'layer':40s}" +
         "".join(f"{'step ' + str(h['step']):>12s}" for h in history)]
  for i, name in enumerate(names):
    out.append(f"{name:40s}" + "".join(f"{_pct(h['layers'][i]['masked_fraction']):>12s}"
                                       for h in history))
  return "\n".join(out)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m smjax.inspect", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("workdir")
  parser.add_argument("--step", type=int, help="checkpoint step (default: the best)")
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  parser.add_argument("--export", type=Path, metavar="FILE.npz", help="write the masks")
  parser.add_argument("--scores", action="store_true", help="with --export: the scores too")
  parser.add_argument("--export-model", type=Path, metavar="FILE", nargs="?", const=DEFAULT_EXPORT,
                      help="write the pruned network: FILE (flax msgpack), FILE.stablehlo "
                      "(jax.export) and FILE.json (default FILE: RUN/export/model.msgpack)")
  parser.add_argument("--import", dest="modules", action="append", default=[], metavar="MODULE",
                      help="import MODULE first: the module that registers your model or dataset")
  parser.add_argument("--compare", metavar="OTHER_WORKDIR", help="overlap with another run's mask")
  parser.add_argument("--history", action="store_true", help="%% masked per layer per checkpoint")
  args = parser.parse_args(argv)
  absl.logging.set_verbosity(absl.logging.ERROR)  # orbax warns about read-only managers
  try:
    for module in args.modules:
      importlib.import_module(module)
    run_dir = resolve(args.workdir)
    if args.export_model:
      if args.export_model == DEFAULT_EXPORT:
        args.export_model = run_dir / DEFAULT_EXPORT
        args.export_model.parent.mkdir(exist_ok=True)
      info = export_model(run_dir, args.step, args.export_model)
      print(f"wrote {args.export_model}, {args.export_model}.stablehlo and {args.export_model}.json "
            f"(checkpoint {info['step']}, {100 * info['density']:.2f}% of masked-layer weights kept)")
    elif args.export:
      count = export(run_dir, args.step, args.export, args.scores)
      print(f"wrote {count} arrays to {args.export}")
    elif args.compare:
      result = compare(run_dir, resolve(args.compare), args.step)
      print(json.dumps(result) if args.json else _compare_text(result))
    elif args.history:
      history = masks.mask_history(run_dir)
      print(json.dumps(history) if args.json else _history_text(history))
    elif args.json:
      print(json.dumps(masks.mask_table(run_dir, args.step)))
    else:
      print(describe(run_dir, args.step))
  except (checkpoint.CheckpointError, RunError, ValueError, OSError, ImportError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  return 0


def main_exit() -> None:
  """The console script's entry point."""
  sys.exit(main())


if __name__ == "__main__":
  main_exit()

"""Your own model and data through every smjax command: an example experiment module.

    python -m examples.custom_model --seeds 0 1 --jobs 2        # mask, weight, finetune per seed
    python -m smjax.report runs/custom_model
    python -m smjax.inspect runs/custom_model/seed0/finetune --import examples.custom_model \\
        --export-model

A flax model, a dataset of float arrays and a mask rule are registered at the top level (so the
worker processes of --jobs register them too), then `get_config` picks them by name.
"""

import sys

import flax.linen as nn
import numpy as np

from smjax import cli, data, masking, models
from smjax.config import Config


class TwoHiddenLayers(nn.Module):
  """A plain MLP: no dtype, axis_name or conv field is needed (smjax.models' contract)."""
  num_classes: int
  width: int = 64

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.width, name="first")(x))
    x = nn.relu(nn.Dense(self.width, name="middle")(x))
    return nn.Dense(self.num_classes, name="last")(x)


def load_blobs(data_dir: str):
  """(train_images, train_labels, test_images, test_labels): 4 classes of 16 standardised
  float features, shaped [n, 1, 1, 16] (a 1x1 image with 16 channels)."""
  from sklearn.datasets import make_classification
  x, y = make_classification(n_samples=1500, n_features=16, n_informative=8, n_classes=4,
                             class_sep=1.5, random_state=0)
  x = ((x - x[:1200].mean(0)) / x[:1200].std(0)).astype(np.float32)[:, None, None, :]
  return x[:1200], y[:1200], x[1200:], y[1200:]


models.register("two_hidden", lambda num_classes: TwoHiddenLayers(num_classes))
data.register("blobs", load_blobs, scale=1.0, mean=0.0, std=1.0, val_size=0.1)
masking.register_mask_rule("middle_only", lambda path, leaf, layers: path == ("middle", "kernel"))


def get_config() -> Config:
  return Config(dataset="blobs", model="two_hidden", batch_size=48, epochs=10, lr=0.05,
                optimizer="sgd", score_optimizer="adam", finetune_lr=0.05, finetune_epochs=10,
                score_init="kaiming_uniform", mask_layers="all")


if __name__ == "__main__":
  sys.exit(cli.main(get_config, "custom_model", doc=__doc__))

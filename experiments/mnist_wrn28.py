"""The reference experiment on MNIST: is the best supermask of a WRN-28-8 a good initialization?

    python -m experiments.mnist_wrn28                            # clean protocol, all three regimes
    python -m experiments.mnist_wrn28 --set protocol=original    # as the published code did it
    python -m experiments.mnist_wrn28 --set model=wrn28-10 --set batch_size=256
    python -m experiments.mnist_wrn28 --set model=lenet5 --set flip=false --seeds 0 1 2 --jobs 2  # CPU

Reads the dataset from --set data_dir=DIR (or $SMJAX_DATA_DIR): the original files or a prepared
tfds directory. Meant for a GPU/TPU. Writes
runs/mnist_wrn28/{mask,weight,finetune}/ and runs/mnist_wrn28/report/. See experiments/wrn28.py
for both protocols.
"""

import sys

from experiments import wrn28
from smjax import cli


def get_config(protocol: str = "clean"):
  return wrn28.get_config("mnist", protocol)


if __name__ == "__main__":
  sys.exit(cli.main(get_config, "mnist_wrn28", doc=__doc__))

"""Synthetic data sets: Moving MNIST (regenerated) and an embedded archive of advected rain cells.

Both exist so that the whole pipeline can run, be tested and be benchmarked without downloads:

- **Moving MNIST** (`mnist`, Srivastava et al. 2015) is the benchmark of the video-prediction
  papers, regenerated from the MNIST digits with the standard generator.
- **Rain cells** (`rain`) is the project's default data set: a CF-1.10 radar-like archive of
  rain rate in mm/h on a real projected grid.

`files` writes either to a file atomically. Nothing here imports torch, so reading IDX files and
making rain cells stay light (the command line imports this package for `stforecast synthetic`).
"""

from stforecast.data.synthetic.mnist import (
    MOVING_MNIST_STEP,
    MOVING_MNIST_TEST_SEED,
    load_mnist_images,
    moving_mnist,
    moving_mnist_test,
    read_idx,
    split_mnist_digits,
    write_npy,
)
from stforecast.data.synthetic.rain import RAIN_CELLS_EPSG, rain_cells, write_rain_cells

__all__ = [
    "MOVING_MNIST_STEP",
    "MOVING_MNIST_TEST_SEED",
    "RAIN_CELLS_EPSG",
    "load_mnist_images",
    "moving_mnist",
    "moving_mnist_test",
    "rain_cells",
    "read_idx",
    "split_mnist_digits",
    "write_npy",
    "write_rain_cells",
]

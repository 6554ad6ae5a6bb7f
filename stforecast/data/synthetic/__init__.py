"""Synthetic data sets: Moving MNIST and the embedded rain-cell archive."""

from stforecast.data.synthetic.core import *  # noqa: F403
from stforecast.data.synthetic.core import __all__  # noqa: F401

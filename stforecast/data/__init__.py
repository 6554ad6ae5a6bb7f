"""From frames to training data: transforms, units, resampling, splits and windows, the prepared
store and its manifest, the training Dataset, synthetic generators."""

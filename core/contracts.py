"""What crosses a boundary between training and the modes that use a trained model: checkpoint keys."""

from __future__ import annotations

CHECKPOINT_KEY = "visionlab_config"  # the resolved run config (a plain dict) inside every checkpoint
CLASSES_KEY = "visionlab_classes"  # the datamodule's class names, read from the data at training
PRUNED_KEY = "visionlab_pruned"  # a pruned network's layer shapes (and how it was pruned): rebuilds it

"""The project's own exceptions: problems with the user's config, data or checkpoints.

`run.py` prints any of them as one short block (what is wrong, where, the fix) and exits with
code 2; every other exception keeps its traceback.
"""

from __future__ import annotations


class VisionlabError(Exception):
    """Base class: an error the user can fix, with the fix in the message."""


class ConfigError(VisionlabError, ValueError):
    """Settings that cannot work together, or a value of the wrong type or range."""


class DataError(VisionlabError, ValueError):
    """A dataset that is missing, malformed or too small for what the config asks of it."""


class CheckpointError(VisionlabError, ValueError):
    """A checkpoint that is missing, truncated, or was written by another network or task."""


class MissingDataError(DataError, FileNotFoundError):
    """A dataset root, list file, image or mask that is not where the config says."""

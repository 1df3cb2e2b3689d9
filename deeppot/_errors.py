"""The errors deeppot raises about its inputs, files and training runs.

Each is a `DeeppotError` and also the built-in type a caller would expect (`ValueError`,
`FloatingPointError`, …), so `except ValueError` keeps working. The command line prints any
of them as one line.
"""


class DeeppotError(Exception):
    """Base class of the errors deeppot raises about inputs, files and training."""


class ConfigError(DeeppotError, ValueError):
    """A configuration problem; the message names the section, key and value."""


class CheckpointError(DeeppotError, ValueError):
    """A checkpoint or model file that cannot be used; the message names the file."""


class TrainingError(DeeppotError, FloatingPointError):
    """Training diverged or produced non-finite values; the stage is not marked done."""


class RunDirectoryBusy(DeeppotError, RuntimeError):
    """Another process holds the run directory's lock."""


class FitFailed(TrainingError):
    """A fit that finished but whose result is physically dead (a zero or uniform force, a
    negative density, a residual no better than no potential); the stage is not marked done."""


class SnapshotError(DeeppotError, ValueError):
    """A simulation snapshot that cannot be read as asked: a missing group or dataset,
    units that cannot be determined, NaN particles; the message names the dataset."""


class TailFitError(DeeppotError, ValueError):
    """A potential's outer shell cannot be continued by the analytic tail asked for."""

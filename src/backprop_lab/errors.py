"""Errors a user can act on. The entry points print their message in a line or two and exit
non-zero; anything else is a bug and keeps its traceback."""


class BackpropLabError(Exception):
    """Base of the errors whose message names the problem and the fix."""

    #: What a run that ends with this error records as its status in summary.json.
    status = "failed"
    #: The process's exit status when this error ends it.
    exit_code = 1
    #: A second line for the user: where a stopped run's files are.
    detail: str | None = None


class ConfigError(BackpropLabError):
    """A config value of the wrong type or out of range, found before any training."""


class CheckpointError(BackpropLabError):
    """A checkpoint path that does not exist, is not a checkpoint, or belongs to another model."""


class Diverged(BackpropLabError):
    """The loss became NaN or infinite."""


class Interrupted(BackpropLabError):
    """Ctrl-C or SIGTERM: the run saved a checkpoint and stopped."""

    status = "interrupted"

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class GradientCheckError(BackpropLabError):
    """Hand-derived and autograd gradients disagree beyond the tolerance."""


class TrialPruned(BackpropLabError):
    """A search trial stopped early because it is doing worse than the others at the same epoch."""

    status = "pruned"

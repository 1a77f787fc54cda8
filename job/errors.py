"""Errors a user can fix: printed as one line, with a non-zero exit and no traceback."""


class UserError(Exception):
    """Bad input, bad configuration or an unreachable store: the message names the input and the problem."""

    exit_code = 2


class TrainingFailed(Exception):
    """A config that cannot go on (NaN loss, out of memory): recorded in its summary, other configs go on."""

    exit_code = 3

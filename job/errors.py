"""Errors a user can fix: printed as one line, with a non-zero exit and no traceback."""

import sys
from typing import Callable


class UserError(Exception):
    """Bad input, bad configuration or an unreachable store: the message names the input and the problem."""

    exit_code = 2


class TrainingFailed(Exception):
    """A config that cannot go on (NaN loss, out of memory): recorded in its summary, other configs go on."""

    exit_code = 3


def run_cli(body: Callable[[], "int | None"]) -> int:
    """Run a command's body; a user error prints one `error:` line and gives its exit code."""
    try:
        return body() or 0
    except (UserError, TrainingFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130

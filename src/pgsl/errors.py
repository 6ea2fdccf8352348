"""What a user's input or environment explains, as opposed to a bug."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(RuntimeError):
    """A failure the user can act on -- a missing optional dependency, a server that refused or
    could not be reached, a hijack SplitGuard detected, a failed FLARE job: the command line reports
    it in one line (exit code 2), with no traceback unless ``pgsl -v``."""

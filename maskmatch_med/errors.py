"""The one exception type for user mistakes.

The CLI turns a UserError into a one-line message on stderr and exit code 2, with no traceback.
Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input (recipe, data, checkpoint, paths), stated in one line."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, carrying the one line the CLI prints: where the last checkpoint is and
    the command that resumes from it. A KeyboardInterrupt still, so that exit code 130 is kept."""

"""The one exception type for user mistakes.

The CLI turns a UserError into a one-line message on stderr and exit code 2, with no traceback.
Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input (recipe, data, checkpoint, paths), stated in one line."""

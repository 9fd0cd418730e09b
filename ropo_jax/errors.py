"""The one base class of errors a user can cause and fix (a bad config, bad data, a missing or
mismatched file). ``python -m ropo_jax.main`` and the other commands print such an error as one
line and exit 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A user-fixable problem; its message names the key or file, the bad value and the fix."""


class ConfigValueError(UserError, ValueError):
    """A config key with a bad value (type, range, unknown name, a file that does not exist)."""

"""The one base of every refusal the user can fix.

Each error raised for bad input (config, data, a results folder, a sweep) derives from
``UserError`` and carries one line that names the problem and the fix. Entry points catch the
base once, print ``error: <line>`` and exit with status 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input, with a one-line message naming the problem and the fix."""


__all__ = ["UserError"]

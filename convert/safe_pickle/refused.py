"""What the restricted unpickler raises when a pickle asks for something it forbids."""

from __future__ import annotations

import pickle

from w2v.errors import shown

MAX_NAME = 200
"""Longest module or class name a pickle may reference (and that a message quotes)."""


class Refused(pickle.UnpicklingError):
    """The pickle asks for something the allow-list forbids."""


class RefusedGlobal(Refused):
    """The pickle names a global that is not on the allow-list."""

    def __init__(self, module: str, name: str):
        # shown: the names come from the file and go into terminal messages
        self.module, self.name = shown(module, MAX_NAME), shown(name, MAX_NAME)
        super().__init__(f"the pickle references {self.module}.{self.name}, which is not allowed")

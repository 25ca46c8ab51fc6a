"""BagError: an episode bag cannot be used; names the path and the problem."""
from __future__ import annotations

from pathlib import Path


class BagError(Exception):
    """An episode bag is missing, incomplete, corrupt or not an episode; `str()` names both."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class AbortedBeforeFirstStep(BagError):
    """The episode was aborted before its first step (a node it needs went down): nothing to train
    on, but no damaged bag either."""

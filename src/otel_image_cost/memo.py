"""Bounded memos: a fact worked out once per distinct input, within a fixed size.

The inputs come from the application and the network, so their variety has no bound; a memo
never grows past its capacity. When full it is emptied, and what it held is worked out again.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedMemo(dict[K, V]):
    """A dict that empties itself rather than grow past `capacity` (lookups are plain dict ones)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def remember(self, key: K, value: V) -> V:
        """Keep `value` under `key`, emptying the memo first when a new key finds it full."""
        if key not in self and len(self) >= self.capacity:
            self.clear()
        self[key] = value
        return value

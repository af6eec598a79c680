"""`BoundedMemo`: every memo of facts about hostile inputs stays within its capacity."""

from __future__ import annotations

from otel_image_cost.memo import BoundedMemo


def test_a_new_key_empties_a_full_memo_first() -> None:
    memo: BoundedMemo[int, str] = BoundedMemo(3)
    for key in range(3):
        assert memo.remember(key, str(key)) == str(key)
    assert memo.remember(3, "3") == "3"
    assert dict(memo) == {3: "3"}


def test_a_known_key_is_replaced_without_emptying() -> None:
    memo: BoundedMemo[int, str] = BoundedMemo(2)
    memo.remember(1, "a")
    memo.remember(2, "b")
    memo.remember(2, "c")
    assert dict(memo) == {1: "a", 2: "c"}


def test_10000_distinct_keys_never_hold_more_than_the_capacity() -> None:
    memo: BoundedMemo[str, int] = BoundedMemo(100)
    for index in range(10_000):
        memo.remember(f"key {index}", index)
        assert len(memo) <= 100

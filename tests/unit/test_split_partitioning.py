"""The query-level split's partitioning (ragtune.split) and the audit's near-copy groups it keeps whole.

The command line, formats and bad input, as real processes: tests/e2e/test_split.py.
"""

from __future__ import annotations

import pytest

from ragtune.audit.leakage import near_duplicate_groups
from ragtune.core.errors import UserError
from ragtune.split import split_groups, split_indices

TEN = "một hai ba bốn năm sáu bảy tám chín mười"


def distinct(n: int) -> list[str]:
    """``n`` queries that share no word."""
    return [" ".join(f"q{i}w{k}" for k in range(6)) for i in range(n)]


def test_near_copy_groups_are_transitive_and_fold_case_accents_punctuation_and_order():
    one_changed = TEN.replace("năm", "NĂM").replace("ba", "X")  # 9 of 11 words shared: 0.82
    two_changed = one_changed.replace("sáu", "Y")  # 0.82 to one_changed, 0.67 to TEN
    texts = [TEN, "other words here", one_changed, "Mười chín tám bảy sáu năm bốn ba hai MỘT?", two_changed,
             "mot hai ba bon nam sau bay tam chin muoi"]
    assert near_duplicate_groups(texts) == [[0, 2, 3, 4, 5], [1]]
    # The middle of a chain last: it joins two groups formed before it.
    assert near_duplicate_groups([TEN, two_changed, one_changed, "x y"]) == [[0, 1, 2], [3]]


def test_every_text_is_in_exactly_one_group():
    texts = distinct(7) + [TEN, TEN.upper()]
    groups = near_duplicate_groups(texts)
    assert sorted(i for group in groups for i in group) == list(range(9)) and [7, 8] in groups


def test_same_seed_same_split_other_seed_other_split():
    texts = distinct(50)
    first = split_indices(texts, 0.2, seed=42)
    assert split_indices(texts, 0.2, seed=42) == first
    assert split_indices(texts, 0.2, seed=7) != first
    train, test = first
    assert len(test) == 10 and sorted(train + test) == list(range(50))
    assert train == sorted(train) and test == sorted(test)  # each side in the input's order


def test_groups_are_placed_whole_and_the_test_side_fits_its_size():
    groups = [[0, 1, 2], [3], [4, 5], [6], [7], [8], [9], [10, 11, 12, 13], [14], [15], [16], [17], [18], [19]]
    for seed in range(20):
        train, test = split_groups(groups, 20, 0.25, seed)
        assert len(test) == 5 and sorted(train + test) == list(range(20))
        for group in groups:
            assert set(group) <= set(test) or set(group) <= set(train), (seed, group)


@pytest.mark.parametrize("ratio, total, message", [
    (0.0, 10, "--test_ratio must be in (0, 1), got 0.0"),
    (1.0, 10, "--test_ratio must be in (0, 1), got 1.0"),
    (float("nan"), 10, "--test_ratio must be in (0, 1), got nan"),
    (0.04, 10, "--test_ratio 0.04 of 10 queries leaves the test side empty"),
    (0.96, 10, "--test_ratio 0.96 of 10 queries leaves the train side empty"),
])
def test_a_ratio_without_two_sides_is_a_user_error(ratio, total, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        split_groups([[i] for i in range(total)], total, ratio, seed=1)


def test_groups_too_large_for_the_test_side_are_a_user_error():
    with pytest.raises(UserError, match="smallest group of near-copy queries, which must stay on one side, has 5"):
        split_groups([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]], 10, 0.2, seed=1)

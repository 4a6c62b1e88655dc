"""Token-budget batching (raydaa.data.token_batches) and the scenario's budget."""

import random

import pytest

from raydaa.config.defaults import DEFAULT_BATCH_TOKENS
from raydaa.data.token_batches import in_original_order, token_batches
from raydaa.io.memory import peak_rss_mib


def check(lengths, budget):
    """The helper's contract on one input; returns its batches."""
    batches = token_batches(lengths, budget)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(lengths)))  # every index exactly once
    for n, batch in enumerate(batches):
        assert batch, "no empty batch"
        longest = max(max(1, lengths[i]) for i in batch)
        if len(batch) > 1:  # a single row may exceed the budget: alone, never dropped
            assert len(batch) * longest <= budget  # rows x longest row within the budget
        if n + 1 < len(batches):  # greedy: the next batch's first row did not fit
            assert (len(batch) + 1) * longest > budget
    # sorted by length, longest first, across and within batches (ties in index order)
    assert flat == sorted(range(len(lengths)), key=lambda i: (-max(1, lengths[i]), i))
    return batches


def test_batches_respect_the_budget_and_hold_every_row_once():
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randint(0, 300) for _ in range(rng.randint(0, 60))]
        check(lengths, rng.choice([1, 64, 300, 1000, 4096]))


def test_batches_are_greedy_and_sorted():
    lengths = [5, 50, 10, 40, 10]
    # longest first: 50 | 40 | 10 10 5  (2 x 50 and 2 x 40 exceed 64; 3 x 10 does not)
    assert check(lengths, 64) == [[1], [3], [2, 4, 0]]
    assert check(lengths, 10**6) == [[1, 3, 2, 4, 0]]


def test_a_row_longer_than_the_budget_is_alone():
    batches = check([3, 500, 2, 4, 700], 16)
    assert batches[:2] == [[4], [1]]
    assert batches[2:] == [[3, 0, 2]]
    assert check([9], 4) == [[0]]


def test_empty_input_and_bad_budgets():
    assert token_batches([], 16) == []
    for budget in (0, -3, 1.5, True, "16"):
        with pytest.raises(ValueError, match="token budget"):
            token_batches([1, 2], budget)
    with pytest.raises(ValueError, match="row 1"):
        token_batches([1, -2], 16)


def test_results_go_back_to_the_original_order():
    lengths = [7, 1, 9, 3, 3, 8]
    batches = token_batches(lengths, 18)
    results = [[f"row{i}" for i in batch] for batch in batches]
    assert in_original_order(batches, results) == [f"row{i}" for i in range(len(lengths))]
    assert in_original_order([], []) == []
    with pytest.raises(ValueError, match="gave 1 results"):
        in_original_order([[0, 1]], [["a"]])
    with pytest.raises(ValueError, match="two batches"):
        in_original_order([[0], [0]], [["a"], ["b"]])


def test_scenario_budget_is_checked_and_defaults_to_the_helpers():
    from raydaa.config.scenario import ResourcesConfig, load_scenario

    assert ResourcesConfig().batch_tokens == DEFAULT_BATCH_TOKENS == 16384
    assert ResourcesConfig(batch_tokens=1).batch_tokens == 1
    for bad in (0, -1):
        with pytest.raises(ValueError, match="batch_tokens must be >= 1"):
            ResourcesConfig(batch_tokens=bad)
    for bad in (1.5, True, "4096"):
        with pytest.raises(ValueError, match="batch_tokens must be a whole number"):
            ResourcesConfig(batch_tokens=bad)
    assert load_scenario("tiny").resources.batch_tokens == 16384


def test_peak_rss_is_this_process_in_mib():
    peak = peak_rss_mib()
    assert 10 < peak < 1 << 20  # a Python process with torch around: tens of MiB at least

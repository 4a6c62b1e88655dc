"""Optuna distributions of a method's space: the grid's values, or the box they span
(`raydaa search --space grid|continuous`)."""

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from raydaa.config.optuna_space import distributions, grid_size, in_space, params_in
from raydaa.config.search_space import load_method_space


def test_grid_space_is_a_categorical_over_each_grid_list():
    space = load_method_space("dpo", "tiny")
    dists = space.optuna_space()
    assert set(dists) == set(space.searched)
    for key, values in space.searched.items():
        assert isinstance(dists[key], CategoricalDistribution)
        assert list(dists[key].choices) == values
    assert grid_size(dists) == space.size


def test_continuous_two_stage_space_is_log_uniform_beta_and_lr_within_the_grid():
    space = load_method_space("dpo", "tiny")
    dists = space.optuna_space("continuous")
    for key, values in (("beta", space.betas), ("lr", space.lrs)):
        assert isinstance(dists[key], FloatDistribution) and dists[key].log, key
        assert (dists[key].low, dists[key].high) == (min(values), max(values)), key
    # two-stage: λ = 1 only, and one epoch count: nothing to search there
    assert dists["lambda_"] == CategoricalDistribution([1.0])
    assert isinstance(dists["epochs"], CategoricalDistribution)
    assert grid_size(dists) is None  # no end of points
    for config in space.grid():  # every grid point (and so every grid row) fits the box
        assert in_space(config, space.fixed(), dists), config


def test_continuous_single_stage_space_searches_lambda_and_keeps_epochs_categorical():
    space = load_method_space("orpo", "tiny", setup="base_init")
    assert len(space.lambdas) > 1 and space.epochs == [1, 2] and space.betas == [1.0]
    dists = space.optuna_space("continuous")
    assert isinstance(dists["lambda_"], FloatDistribution) and dists["lambda_"].log
    assert (dists["lambda_"].low, dists["lambda_"].high) == (min(space.lambdas), max(space.lambdas))
    assert dists["epochs"] == CategoricalDistribution([1, 2])
    assert dists["beta"] == CategoricalDistribution([1.0])  # one β: not searched


def test_params_outside_the_space_are_refused_and_grid_spellings_kept():
    dists = distributions({"beta": [0.01, 0.1], "lr": [1e-4, 3e-4]}, "continuous")
    assert params_in({"beta": 0.05, "lr": 2e-4}, dists) == {"beta": 0.05, "lr": 2e-4}
    assert params_in({"beta": 0.2, "lr": 2e-4}, dists) is None  # β above the grid's largest
    assert params_in({"beta": 0.05}, dists) is None  # lr missing
    grid = distributions({"beta": [0.01, 0.1], "lr": [1e-4, 3e-4]})
    assert params_in({"beta": 0.1 * (1 + 1e-12), "lr": 1e-4}, grid) == {"beta": 0.1, "lr": 1e-4}
    assert params_in({"beta": 0.05, "lr": 1e-4}, grid) is None  # between grid values
    assert not in_space({"beta": 0.1, "lr": 1e-4, "method": "ipo"}, {"method": "dpo"}, grid)


def test_an_unknown_space_kind_is_named():
    with pytest.raises(ValueError, match="space: unknown kind 'log'.*grid.*continuous"):
        distributions({"beta": [0.1, 1.0]}, "log")

"""Checks `raydaa search` makes before any trial runs."""

from types import SimpleNamespace

import pytest

from raydaa.sweep.search import check_reference_init


def test_a_base_initialized_sweep_refuses_an_sft_reference():
    settings = SimpleNamespace(setup="base_init")
    with pytest.raises(SystemExit, match="starts from the base model.*SFT checkpoint"):
        check_reference_init({"init": "sft"}, "base", settings, "/r/tiny")
    check_reference_init({"init": "base"}, "base", settings, "/r/tiny")  # the right kind


def test_a_two_stage_sweep_on_a_base_reference_says_so(capsys):
    check_reference_init({"init": "base"}, "sft", SimpleNamespace(setup="two_stage"), "/r/tiny")
    assert "is the base model" in capsys.readouterr().out
    check_reference_init({"init": "sft"}, "sft", SimpleNamespace(setup="two_stage"), "/r/tiny")
    assert capsys.readouterr().out == ""

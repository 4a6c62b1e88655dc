"""Search spaces and scenarios under `raydaa/search_spaces/`: every file loads, the grids are the
paper's (Tables 4 and 6, Appendix A.2.2, §4.1), Table 7's and Table 1's best
configurations lie inside them, and bad YAML fails with the file and the key named.

The paper's numbers are typed in here again, from the paper, independently of the YAML.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import pytest
import yaml

from raydaa.config.evaluation import GenerationConfig, JudgeConfig
from raydaa.config.loading import ConfigError
from raydaa.config.scenario import Scenario, available_scenarios, load_scenario, search_spaces_dir
from raydaa.config.search_space import (
    TWO_STAGE,
    MethodSpace,
    available_methods,
    available_setups,
    load_all_spaces,
    load_method_space,
)
from raydaa.core.losses import METHODS

PAPER_SCENARIOS = ("llama32-3b-tldr", "llama32-3b-uf", "llama31-8b-uf")
SCENARIOS = ("tiny", "rehearsal", *PAPER_SCENARIOS)
SINGLE_STAGE_SETUPS = ("base_init", "sft_init", "sft_init_align_only")
GRID_KEYS = {"method", "beta", "lr", "lambda_", "sft_weight", "gamma_beta_ratio", "epochs",
             "normalization"}

# Paper Table 6: β values tested for each method on all scenarios.
TABLE6 = {
    "dpo": [0.001, 0.003, 0.005, 0.01, 0.05, 0.1],
    "ipo": [0.0007, 0.001, 0.005, 0.01, 0.05, 0.1],
    "simpo": [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0],
    "orpo": [0.05, 0.1, 0.2, 0.5, 1.0, 2.0],
    "asft": [0.05, 0.1, 0.2, 0.5, 1.0, 2.0],
    "apo_zero": [0.001, 0.003, 0.005, 0.01, 0.05, 0.1, 0.2],
    "cal_dpo": [0.00005, 0.0001, 0.0003, 0.0005, 0.001, 0.003],
    "nca": [0.0001, 0.0003, 0.0005, 0.001, 0.005, 0.007, 0.01, 0.03, 0.05],
}
# Appendix A.2.2: extra β values "to reach the extreme points of the Pareto front".
EXTRA_BETAS = {
    ("cal_dpo", "llama32-3b-tldr"): [0.00001, 0.00003],
    ("cal_dpo", "llama32-3b-uf"): [0.00001, 0.00003],
    ("nca", "llama32-3b-tldr"): [0.00001, 0.00003, 0.00005],
    ("apo_zero", "llama32-3b-tldr"): [0.0003, 0.0005],
    ("asft", "llama32-3b-tldr"): [0.0003, 0.0005, 0.001, 0.003, 0.005],
}
TABLE4_ALIGN_LRS = [3e-7, 5e-7, 7e-7, 1e-6]
TINY_LRS = [3e-5, 1e-4]
# tiny replaces Table 6's β grids: its ~7-token answers under length normalization need
# larger β (README "Tiny scenario results"); the paper scenarios keep Table 6.
TINY_BETAS = {
    "dpo": [0.01, 0.1, 0.5, 1.0, 2.0, 5.0],
    "ipo": [0.01, 0.1, 0.5, 1.0, 5.0],
    "simpo": [0.1, 0.5, 1.0, 2.0, 5.0],
    "nca": [0.001, 0.01, 0.1, 1.0, 5.0],
    "cal_dpo": [0.001, 0.01, 0.1, 1.0, 5.0],
    "apo_zero": [0.01, 0.1, 0.5, 1.0, 5.0],
    "orpo": [0.05, 0.2, 0.5, 1.0, 2.0],
    "asft": [0.05, 0.2, 0.5, 1.0, 2.0],
}
# Paper Table 7: best (lr, β) per method and scenario.
TABLE7 = {
    "dpo": [(7e-7, 0.05), (1e-6, 0.01), (1e-6, 0.003)],
    "ipo": [(1e-6, 0.005), (7e-7, 0.001), (1e-6, 0.001)],
    "simpo": [(3e-7, 0.5), (7e-7, 1.0), (6e-7, 1.0)],
    "orpo": [(3e-7, 0.5), (5e-7, 0.2), (5e-7, 0.5)],
    "asft": [(3e-7, 0.001), (1e-6, 0.2), (7e-7, 0.1)],
    "apo_zero": [(3e-7, 0.001), (3e-7, 0.005), (3e-7, 0.003)],
    "nca": [(3e-7, 0.0001), (3e-7, 0.0005), (3e-7, 0.0003)],
    "cal_dpo": [(3e-7, 0.00003), (5e-7, 0.0003), (3e-7, 0.0003)],
}
# Paper Table 1 (Llama 3.1 8B UF): best lr of each single-stage / SFT-initialized setup.
TABLE1 = {
    ("orpo", "base_init"): 1e-5, ("asft", "base_init"): 6e-6,
    ("orpo", "sft_init"): 1e-6, ("asft", "sft_init"): 7e-7,
    ("orpo", "sft_init_align_only"): 5e-7, ("asft", "sft_init_align_only"): 5e-7,
}


def same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y) for x, y in zip(sorted(a), sorted(b), strict=True))


# ---------------------------------------------------------------------------------------
# Every shipped file loads
# ---------------------------------------------------------------------------------------


def test_every_yaml_file_under_search_spaces_loads():
    root = search_spaces_dir()
    files = sorted(root.rglob("*.yml")) + sorted(root.rglob("*.yaml"))
    assert files
    kinds = {"scenarios": 0, "methods": 0, "single_stage": 0}
    for path in files:
        kind = path.relative_to(root).parts[0]
        assert kind in kinds and path.parent.name == kind, f"unclassified file {path}"
        kinds[kind] += 1
        if kind == "scenarios":
            scenario = load_scenario(str(path))
            assert scenario.name == path.stem
            assert isinstance(scenario.generation, GenerationConfig), path
            assert isinstance(scenario.judge, JudgeConfig), path
            continue
        setups = (
            [TWO_STAGE]
            if kind == "methods"
            else list(yaml.safe_load(path.read_text())["setups"])
        )
        for setup in setups:
            for scenario in (None, *available_scenarios()):
                space = load_method_space(path.stem, scenario, setup)
                assert space.size == len(space.grid()) > 0
    assert kinds == {"scenarios": 5, "methods": 8, "single_stage": 2}


def test_available_names():
    assert set(available_scenarios()) == set(SCENARIOS)
    assert available_methods() == list(METHODS)
    assert available_setups() == [TWO_STAGE, *SINGLE_STAGE_SETUPS]
    assert available_setups("orpo") == available_setups("asft") == available_setups()
    assert available_setups("dpo") == [TWO_STAGE]


def test_tiny_scenario_is_unchanged_and_has_evaluation_sections():
    tiny = load_scenario("tiny")
    assert (tiny.model.builder, tiny.max_length, tiny.seed) == ("tiny", 64, 0)
    # the calibrated recipe (README "Tiny scenario results"): SFT until the policy imitates
    # the writers, one alignment epoch (what every measured tiny sweep ran)
    assert (tiny.sft.lr, tiny.sft.epochs, tiny.sft.global_batch_size) == (1e-3, 8, 32)
    assert (tiny.align.global_batch_size, tiny.align.micro_batch_size) == (32, 16)
    assert tiny.align.epochs == 1
    gen = tiny.generation
    assert (gen.temperature, gen.top_k, gen.top_p, gen.max_new_tokens) == (0.9, 40, 1.0, 24)
    assert tiny.judge.type == "gold" and tiny.judge.num_prompts == 200


@pytest.mark.parametrize("name", PAPER_SCENARIOS)
def test_paper_scenarios_follow_tables_4_and_8(name):
    s = load_scenario(name)
    tldr = "tldr" in name
    assert s.model.hf_id == ("meta-llama/Llama-3.1-8B" if "8b" in name else "meta-llama/Llama-3.2-3B")
    assert s.max_length == (1024 if tldr else 4096)
    assert s.data.format == ("plain" if tldr else "conversational")
    for recipe in (s.sft, s.align):
        assert (recipe.epochs, recipe.global_batch_size, recipe.warmup_ratio) == (1, 128, 0.03)
        assert (recipe.grad_clip, recipe.adam_betas) == (2.0, (0.9, 0.95))
        assert (recipe.optimizer, recipe.lr_schedule) == ("adam", "linear")
    assert s.sft.lr == 6e-6 and s.align.lr is None
    r = s.resources
    assert (r.num_workers, r.use_gpu, r.bf16, r.gradient_checkpointing) == (8, True, True, True)
    assert r.attn_implementation == "flash_attention_2"
    assert r.zero_stage == (3 if "8b" in name else 2)
    g = s.generation
    assert (g.temperature, g.top_k, g.top_p) == (0.9, 40, 1.0)
    assert g.max_new_tokens == (256 if tldr else 4096)
    if tldr:
        assert s.judge.type == "gpt_side_by_side" and s.judge.model == "gpt-4o-2024-08-06"
        assert s.judge.num_prompts == 500 and s.judge.endpoint_env
    else:
        assert s.judge.type == "alpaca_eval" and s.judge.extra_benchmarks == ["arena_hard"]
        assert g.greedy_benchmarks == ["arena_hard"]  # paper A.3: Arena-Hard at temperature 0
        assert s.data.sft_split == "train_sft" and s.data.validation_split == "test_prefs"


# ---------------------------------------------------------------------------------------
# The grids are the paper's
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_two_stage_grids_are_the_papers(method, scenario):
    space = load_method_space(method, scenario)
    if scenario == "tiny":
        expected_betas = TINY_BETAS[method]
    else:
        expected_betas = TABLE6[method] + EXTRA_BETAS.get((method, scenario), [])
    assert same(space.betas, expected_betas)
    if scenario == "tiny":
        expected_lrs = TINY_LRS
    elif scenario == "rehearsal":
        expected_lrs = [3e-4, 1e-3]  # the paper's β; lrs for a random init and 13 steps
    elif (method, scenario) == ("simpo", "llama31-8b-uf"):
        expected_lrs = [6e-7]  # paper A.2.2: a single lr for SimPO on 8B UF
    else:
        expected_lrs = TABLE4_ALIGN_LRS
    assert same(space.lrs, expected_lrs)
    assert (space.lambdas, space.sft_weight, space.epochs) == ([1.0], 0.0, [1])
    assert space.normalization == "paper" and space.init == "sft"
    assert space.gamma_beta_ratio == (0.5 if method == "simpo" else None)
    assert space.size == len(expected_betas) * len(expected_lrs)

    grid = space.grid()
    assert len(grid) == space.size
    assert all(set(config) == GRID_KEYS for config in grid)
    assert len({tuple(sorted(c.items(), key=lambda kv: kv[0])) for c in grid}) == space.size


@pytest.mark.parametrize(
    "method, scenario, size",
    [
        ("dpo", "llama31-8b-uf", 6 * 4),
        ("nca", "llama32-3b-tldr", (9 + 3) * 4),
        ("nca", "llama31-8b-uf", 9 * 4),
        ("simpo", "llama31-8b-uf", 7 * 1),
        ("simpo", "llama32-3b-uf", 7 * 4),
        ("cal_dpo", "llama32-3b-tldr", (6 + 2) * 4),
        ("cal_dpo", "llama32-3b-uf", (6 + 2) * 4),
        ("cal_dpo", "llama31-8b-uf", 6 * 4),
        ("apo_zero", "llama32-3b-tldr", (7 + 2) * 4),
        ("asft", "llama32-3b-tldr", (6 + 5) * 4),
        ("dpo", "tiny", 6 * 2),
    ],
)
def test_grid_sizes(method, scenario, size):
    assert load_method_space(method, scenario).size == size


@pytest.mark.parametrize("method", ["orpo", "asft"])
@pytest.mark.parametrize("scenario", PAPER_SCENARIOS)
def test_single_stage_setups_of_section_4_1(method, scenario):
    base = load_method_space(method, scenario, "base_init")
    assert base.init == "base" and (base.betas, base.sft_weight) == ([1.0], 1.0)
    assert same(base.lambdas, [0.1, 0.2, 0.5, 1.0]) and same(base.lrs, [6e-6, 8e-6, 1e-5])
    assert base.epochs == [1, 2] and base.size == 4 * 3 * 2

    with_sft = load_method_space(method, scenario, "sft_init")
    assert with_sft.init == "sft" and (with_sft.betas, with_sft.sft_weight) == ([1.0], 1.0)
    assert same(with_sft.lambdas, [0.1, 0.2, 0.5, 1.0]) and same(with_sft.lrs, [5e-7, 7e-7, 1e-6])
    assert with_sft.epochs == [1] and with_sft.size == 4 * 3

    align = load_method_space(method, scenario, "sft_init_align_only")
    assert align.init == "sft" and (align.betas, align.lambdas, align.sft_weight) == ([1.0], [1.0], 0.0)
    assert same(align.lrs, [5e-7, 7e-7, 1e-6]) and align.size == 3


@pytest.mark.parametrize("method", METHODS)
def test_table7_best_configs_lie_inside_the_grids(method):
    for scenario, (lr, beta) in zip(PAPER_SCENARIOS, TABLE7[method], strict=True):
        space = load_method_space(method, scenario)
        assert space.contains({"lr": lr, "beta": beta}), (method, scenario, lr, beta)


def test_table1_best_single_stage_configs_lie_inside_the_grids():
    for (method, setup), lr in TABLE1.items():
        space = load_method_space(method, "llama31-8b-uf", setup)
        assert space.contains({"lr": lr, "beta": 1.0}), (method, setup)
    # Table 1 / §5.1: λ = 1 is the best single-stage λ, after two epochs
    assert load_method_space("orpo", "llama31-8b-uf", "base_init").contains({"lambda_": 1.0, "epochs": 2})


def test_contains_rejects_points_outside_the_grid():
    space = load_method_space("dpo", "llama31-8b-uf")
    assert not space.contains({"beta": 0.002})
    assert not space.contains({"lr": 6e-7})
    assert not space.contains({"sft_weight": 1.0})
    with pytest.raises(KeyError):
        space.contains({"gamma": 1.0})


def test_an_unknown_scenario_object_gets_the_method_defaults():
    tiny = load_scenario("tiny")
    mine = dataclasses.replace(tiny, name="my-own")
    assert load_method_space("nca", mine).size == 9 * 4  # Table 6 x Table 4
    assert load_method_space("nca", tiny).size == 5 * 2  # tiny's override applies


def test_load_all_spaces():
    spaces = load_all_spaces("llama31-8b-uf")
    assert len(spaces) == 8 + 2 * 3
    assert all(isinstance(s, MethodSpace) for s in spaces.values())


# ---------------------------------------------------------------------------------------
# Ray Tune / Optuna
# ---------------------------------------------------------------------------------------


def test_optuna_search_samples_only_grid_points():
    from ray.tune.search.optuna import OptunaSearch

    space = load_method_space("orpo", "llama31-8b-uf", "base_init")
    searcher = OptunaSearch(space.optuna_space(), metric="quality", mode="max", seed=0)
    for i in range(12):
        config = {**space.fixed(), **searcher.suggest(f"t{i}")}
        assert set(config) == GRID_KEYS and space.contains(config), config

    by_run = OptunaSearch(space.optuna_define_by_run(), metric="quality", mode="max", seed=0)
    config = by_run.suggest("t0")
    assert set(config) == GRID_KEYS and space.contains(config)


def test_tune_grid_space_covers_the_grid():
    space = load_method_space("simpo", "llama32-3b-uf")
    param_space = space.tune_grid_space()
    n = math.prod(len(v["grid_search"]) for v in param_space.values() if isinstance(v, dict))
    assert n == space.size and param_space["gamma_beta_ratio"] == 0.5


# ---------------------------------------------------------------------------------------
# Errors name the file and the key
# ---------------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """A copy of search_spaces/ to break, used through $RAYDAA_SEARCH_SPACES."""
    copy = tmp_path / "spaces"
    shutil.copytree(search_spaces_dir(), copy)
    monkeypatch.setenv("RAYDAA_SEARCH_SPACES", str(copy))
    return copy


def edit(path: Path, change) -> Path:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))
    return path


def raises(*fragments: str):
    """pytest.raises(ConfigError) whose message must hold every fragment."""

    class Check:
        def __enter__(self):
            self.ctx = pytest.raises(ConfigError)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            swallowed = self.ctx.__exit__(*exc)
            message = str(self.info.value)
            for fragment in fragments:
                assert fragment in message, f"{fragment!r} not in {message!r}"
            return swallowed

    return Check()


def test_unknown_top_level_key(root):
    path = edit(root / "methods" / "dpo.yaml", lambda d: d.update(betaz=[0.1]))
    with raises(str(path), "'betaz'", "valid keys", "'betas'"):
        load_method_space("dpo", "tiny")


def test_unknown_key_in_a_scenario_block(root):
    path = edit(root / "methods" / "nca.yaml", lambda d: d["scenarios"]["tiny"].update(lr=[1.0]))
    with raises(str(path), "scenarios.tiny", "'lr'", "'lrs'", "'extra_betas'"):
        load_method_space("nca", "llama31-8b-uf")  # any load checks every block


def test_unknown_scenario_in_a_scenario_block(root):
    path = edit(root / "methods" / "nca.yaml", lambda d: d["scenarios"].update({"llama-70b": {}}))
    with raises(str(path), "scenarios", "'llama-70b'", "'llama31-8b-uf'", "'tiny'"):
        load_method_space("nca", "tiny")


def test_unknown_scenario_requested(root):
    with raises(str(root / "scenarios"), "unknown scenario 'nope'", "'llama32-3b-uf'"):
        load_method_space("dpo", "nope")


def test_unknown_method_requested(root):
    with raises(str(root / "methods"), "unknown method 'kto'", "'dpo'", "'simpo'"):
        load_method_space("kto", "tiny")


def test_a_file_for_an_unknown_method(root):
    path = root / "methods" / "kto.yaml"
    shutil.copy(root / "methods" / "dpo.yaml", path)
    edit(path, lambda d: d.update(method="kto"))
    with raises(str(path), "method", "'kto'", "'cal_dpo'"):
        load_method_space("kto", "tiny")


def test_method_key_must_match_the_file_name(root):
    path = edit(root / "methods" / "ipo.yaml", lambda d: d.update(method="dpo"))
    with raises(str(path), "method", "'ipo'"):
        load_method_space("ipo")


def test_unknown_setup(root):
    with raises(str(root / "single_stage" / "orpo.yaml"), "setups", "'two_stage'", "'base_init'"):
        load_method_space("orpo", "tiny", "single")
    with raises(str(root / "single_stage"), "'dpo'", "'base_init'", "['two_stage']"):
        load_method_space("dpo", "tiny", "base_init")


def test_unknown_key_in_a_setup(root):
    path = edit(root / "single_stage" / "asft.yaml", lambda d: d["setups"]["sft_init"].update(lambda_=[1]))
    with raises(str(path), "setups.sft_init", "'lambda_'", "'lambdas'"):
        load_method_space("asft", "tiny", "sft_init")


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("betas", [0.1, -0.01], "betas"),
        ("betas", [0.0], "betas"),
        ("betas", [], "non-empty"),
        ("lrs", [0.0], "lrs"),
        ("lrs", "1e-6", "lrs"),
        ("lambdas", [-1.0], "lambdas"),
        ("betas", [0.1, 0.1], "repeated"),
        ("betas", ["a lot"], "betas"),
        ("epochs", [0], "epochs"),
        ("epochs", [1.5], "epochs"),
        ("sft_weight", -1, "sft_weight"),
        ("gamma_beta_ratio", 0.5, "gamma_beta_ratio"),
        ("normalization", "log", "normalization"),
        ("init", "random", "init"),
    ],
)
def test_invalid_values_name_the_file_and_key(root, key, value, fragment):
    path = edit(root / "methods" / "dpo.yaml", lambda d: d.update({key: value}))
    with raises(str(path), fragment):
        load_method_space("dpo", "llama31-8b-uf")


def test_invalid_value_in_a_scenario_block_names_the_block(root):
    path = edit(root / "methods" / "cal_dpo.yaml",
                lambda d: d["scenarios"]["llama32-3b-uf"].update(extra_betas=[-1e-5]))
    with raises(str(path), "scenarios.llama32-3b-uf", "betas"):
        load_method_space("cal_dpo", "llama32-3b-uf")


def test_simpo_needs_its_ratio(root):
    path = edit(root / "methods" / "simpo.yaml", lambda d: d.update(gamma_beta_ratio=None))
    with raises(str(path), "gamma_beta_ratio"):
        load_method_space("simpo", "tiny")


def test_numeric_strings_are_read_as_numbers(root):
    # YAML 1.1 reads `3e-7` (no dot) as a string
    edit(root / "methods" / "dpo.yaml", lambda d: d.update(lrs=["3e-7", "1e-6"]))
    assert load_method_space("dpo", "llama31-8b-uf").lrs == [3e-7, 1e-6]


# ---------------------------------------------------------------------------------------
# Scenario sections
# ---------------------------------------------------------------------------------------


def scenario_with(tmp_path, change, name="tiny") -> Path:
    path = tmp_path / f"{name}-edited.yaml"
    shutil.copy(search_spaces_dir() / "scenarios" / f"{name}.yaml", path)
    return edit(path, change)


@pytest.mark.parametrize(
    "name, change, fragments",
    [
        ("tiny", lambda d: d["generation"].update(temprature=1.0), ["generation", "'temprature'"]),
        ("tiny", lambda d: d["judge"].update(kind="gold"), ["judge", "'kind'"]),
        ("tiny", lambda d: d["generation"].update(top_p=0.0), ["generation", "top_p"]),
        ("tiny", lambda d: d["judge"].update(type="gpt4"), ["judge", "'gpt4'", "gpt_side_by_side"]),
        ("tiny", lambda d: d["judge"].update(num_prompts=500), ["judge.num_prompts"]),
        ("llama32-3b-tldr", lambda d: d["judge"].pop("model"), ["judge", "model"]),
        ("llama32-3b-tldr", lambda d: d.update(judge={"type": "gold"}), ["gold", "tiny"]),
        ("llama31-8b-uf", lambda d: d["judge"].update(num_prompts=100), ["judge", "own prompts"]),
        ("llama31-8b-uf", lambda d: d["generation"].update(greedy_benchmarks=["mt_bench"]),
         ["generation", "mt_bench"]),
        ("llama31-8b-uf", lambda d: d["align"].update(micro_batch_size=3), ["align.global_batch_size"]),
        ("llama31-8b-uf", lambda d: d["resources"].update(use_gpu=False), ["flash_attention_2"]),
        ("llama31-8b-uf", lambda d: d["sft"].update(lr_schedule="cosine"), ["sft", "lr_schedule"]),
    ],
)
def test_bad_scenario_sections_name_the_file_and_key(tmp_path, name, change, fragments):
    path = scenario_with(tmp_path, change, name)
    with raises(str(path), *fragments):
        load_scenario(str(path))


def test_evaluation_sections_are_optional(tmp_path):
    def drop(d):
        del d["generation"], d["judge"]

    scenario = load_scenario(str(scenario_with(tmp_path, drop)))
    assert isinstance(scenario, Scenario) and scenario.generation is None and scenario.judge is None


def test_two_stage_epochs_follow_the_scenarios_align_recipe(tmp_path):
    """A scenario that aligns for 2 epochs gets two-stage grids of 2 epochs (the method YAMLs
    give none); single-stage setups keep their own {1, 2}; no scenario: 1."""
    data = yaml.safe_load((search_spaces_dir() / "scenarios" / "tiny.yaml").read_text())
    data["align"]["epochs"] = 2
    path = tmp_path / "tiny2.yaml"
    path.write_text(yaml.safe_dump(data))
    longer = load_scenario(str(path))
    assert load_method_space("dpo", longer).epochs == [2]
    assert load_method_space("dpo", longer).grid()[0]["epochs"] == 2
    assert load_method_space("orpo", longer, "base_init").epochs == [1, 2]
    assert load_method_space("dpo", "tiny").epochs == [load_scenario("tiny").align.epochs]
    assert load_method_space("dpo").epochs == [1]


# ---------------------------------------------------------------------------------------
# A scenario's own grids (`grids:` in the scenario YAML, anywhere on disk)
# ---------------------------------------------------------------------------------------


def own_scenario(tmp_path, grids, name="mine") -> Path:
    """tiny's file, renamed `name`, carrying `grids`, in a folder of no search space."""
    data = yaml.safe_load((search_spaces_dir() / "scenarios" / "tiny.yaml").read_text())
    path = tmp_path / "elsewhere" / f"{name}-file.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump({**data, "name": name, "grids": grids}))
    return path


def test_a_scenarios_own_grids_override_the_method_file(tmp_path):
    path = own_scenario(tmp_path, {
        "dpo": {"betas": [0.2, 0.3], "lrs": [1.0e-4]},
        "nca": {"extra_betas": [7.0]},
        "orpo": {"setups": {"base_init": {"lambdas": [0.5]}}},
    })
    scenario = load_scenario(str(path))
    assert scenario.name == "mine"  # its `name:`, not its file's stem
    dpo = load_method_space("dpo", scenario)
    assert (dpo.betas, dpo.lrs, dpo.normalization) == ([0.2, 0.3], [1e-4], "paper")
    assert dpo.size == 2
    assert load_method_space("dpo", str(path)).betas == [0.2, 0.3]  # by path, as --scenario
    assert same(load_method_space("nca", scenario).betas, [*TABLE6["nca"], 7.0])
    base = load_method_space("orpo", scenario, "base_init")
    assert base.lambdas == [0.5] and base.epochs == [1, 2]
    # the method's other spaces keep the method file's defaults
    assert load_method_space("orpo", scenario).betas == TABLE6["orpo"]
    assert load_method_space("orpo", scenario, "sft_init").lambdas == [0.1, 0.2, 0.5, 1.0]
    assert same(load_method_space("ipo", scenario).betas, TABLE6["ipo"])


def test_precedence_own_grids_then_the_scenario_block_then_the_defaults(tmp_path):
    """A scenario named tiny: its own lrs win; β is the method file's tiny block; the
    normalization is the method file's default."""
    scenario = load_scenario(str(own_scenario(tmp_path, {"dpo": {"lrs": [2.0e-4]}}, "tiny")))
    space = load_method_space("dpo", scenario)
    assert space.lrs == [2e-4]
    assert same(space.betas, TINY_BETAS["dpo"]) and space.normalization == "paper"
    assert load_method_space("dpo", "tiny").lrs == TINY_LRS  # the shipped tiny: no grids


@pytest.mark.parametrize(
    "grids, fragments",
    [
        ({"kto": {"betas": [0.1]}}, ["grids", "unknown method 'kto'", "'dpo'"]),
        ({"dpo": {"lr": [1e-6]}}, ["grids.dpo", "'lr'", "'lrs'", "'extra_betas'"]),
        ({"dpo": {"betas": [-0.1]}}, ["grids.dpo.betas", "> 0"]),
        ({"dpo": {"epochs": [0]}}, ["grids.dpo.epochs"]),
        ({"dpo": {"normalization": "log"}}, ["grids.dpo.normalization", "'log'"]),
        ({"dpo": [0.1]}, ["grids.dpo", "expected a mapping"]),
        ({"orpo": {"setups": {"base_init": {"lambda": [1]}}}},
         ["grids.orpo.setups.base_init", "'lambda'", "'lambdas'"]),
        ({"orpo": {"setups": {"two_stage": {}}}}, ["grids.orpo.setups.two_stage"]),
        ([1], ["grids", "mapping"]),
    ],
)
def test_bad_grids_name_the_file_and_key(tmp_path, grids, fragments):
    path = own_scenario(tmp_path, grids)
    with raises(str(path), *fragments):
        load_scenario(str(path))


def test_an_own_grid_for_an_unknown_setup_is_refused(tmp_path):
    scenario = load_scenario(str(own_scenario(tmp_path, {"orpo": {"setups": {"nope": {}}}})))
    with raises("'mine'", "grids.orpo.setups", "'nope'", "'base_init'"):
        load_method_space("orpo", scenario)
    with raises("grids.dpo.setups", "'base_init'", "[]"):
        load_method_space("dpo", load_scenario(str(own_scenario(
            tmp_path, {"dpo": {"setups": {"base_init": {}}}}))))


def test_a_grid_that_breaks_a_cross_field_rule_names_the_scenarios_grid(tmp_path):
    scenario = load_scenario(str(own_scenario(tmp_path, {"simpo": {"gamma_beta_ratio": None}})))
    with raises("methods/simpo.yaml", "scenario 'mine' (grids.simpo)", "gamma_beta_ratio"):
        load_method_space("simpo", scenario)


def test_a_scenario_of_a_user_folder_is_found_by_name(tmp_path, monkeypatch):
    """A user's folder adds a scenario; listing is the union; its grids apply by name."""
    path = own_scenario(tmp_path, {"simpo": {"betas": [3.0]}})
    folder = tmp_path / "spaces" / "scenarios"
    folder.mkdir(parents=True)
    shutil.copy(path, folder / "mine.yaml")
    monkeypatch.setenv("RAYDAA_SEARCH_SPACES", str(folder.parent))
    assert set(available_scenarios()) == {*SCENARIOS, "mine"}
    assert load_method_space("simpo", "mine").betas == [3.0]
    assert load_method_space("simpo", "mine").gamma_beta_ratio == 0.5

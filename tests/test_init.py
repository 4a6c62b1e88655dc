"""`raydaa init`: the written scenario loads and gives back every value it wrote, every value
line carries a comment, resources follow the hardware and the model's size (a real tiny
Qwen2 folder, and an 8B Llama known from its config.json alone), `--set` overrides apply
or fail naming the key, and an existing file is kept without --force."""

import dataclasses

import pytest
import yaml
from transformers import LlamaConfig, Qwen2Config, Qwen2ForCausalLM

from raydaa.cli import main
from raydaa.config.init_scenario import ZERO3_ABOVE, batch_split, model_size
from raydaa.config.judge_prompts import get_template
from raydaa.config.rules import check_batch_split
from raydaa.config.scenario import load_scenario
from raydaa.config.scenario_writer import render
from raydaa.config.search_space import available_methods, load_method_space
from raydaa.scenarios.tiny import build_tiny_tokenizer, tiny_datasets


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A saved random-init Qwen2 (hidden 32, 2 layers, tiny's tokenizer and chat template)
    and JSONL SFT / preference / validation files."""
    root = tmp_path_factory.mktemp("own")
    tokenizer = build_tiny_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    sets = tiny_datasets(n_sft=40, n_pref=40, n_val=20)
    files = {}
    for which, split in (("sft", "sft_train"), ("pref", "pref_train"), ("val", "pref_val")):
        files[which] = str(root / f"{which}.jsonl")
        sets[split].to_json(files[which])
    llama8b = root / "llama8b"  # config.json only: Llama 3.1 8B's shape, no weights
    LlamaConfig(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072,
    ).save_pretrained(llama8b)
    return {"model": str(root / "model"), "parameters": model.num_parameters(),
            "llama8b": str(llama8b), "rm": str(root / "model"), **files}


def init(assets, out, *extra, model=None, capsys=None):
    """`raydaa init` on the assets; returns its exit code (argparse's exit code on error)."""
    argv = ["init", "--model", model or assets["model"], "--preference-data", assets["pref"],
            "--sft-data", assets["sft"], "--validation-data", assets["val"],
            "--judge", f"reward_model:{assets['rm']}", "--out", str(out), *extra]
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def assert_loaded_equals_written(scenario, written, where=""):
    """Every value in the file is the loaded Scenario's value (tuples read as lists)."""
    for key, value in written.items():
        loaded = getattr(scenario, key)
        if dataclasses.is_dataclass(loaded):
            assert_loaded_equals_written(loaded, value, f"{where}{key}.")
        else:
            loaded = list(loaded) if isinstance(loaded, tuple) else loaded
            assert loaded == value, f"{where}{key}: wrote {value!r}, loaded {loaded!r}"


def test_the_written_file_loads_and_round_trips(assets, tmp_path):
    out = tmp_path / "mine.yaml"
    assert init(assets, out) == 0
    text = out.read_text()
    written = yaml.safe_load(text)
    scenario = load_scenario(str(out))
    grids = written.pop("grids")
    written["data"] = {k: v for k, v in written["data"].items() if k == "format"}
    assert_loaded_equals_written(scenario, written)
    assert scenario.name == "mine" and scenario.model.hf_id == assets["model"]
    # the grids are the shipped methods' defaults, and they are what the search runs
    assert sorted(grids) == sorted(available_methods())
    for method, grid in grids.items():
        shipped = load_method_space(method)
        assert grid == {"betas": shipped.betas, "lrs": shipped.lrs}
        space = load_method_space(method, scenario)
        assert (space.betas, space.lrs) == (grid["betas"], grid["lrs"])
    # every value line says where it came from
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            assert "  # " in line, f"no comment: {line!r}"
    assert "# paper Table 4" in text and "# paper Table 6" in text and "# --model" in text


def test_a_cpu_scenario_without_gpus(assets, tmp_path):
    out = tmp_path / "cpu.yaml"
    assert init(assets, out, "--gpus-per-node", "0") == 0
    scenario = load_scenario(str(out))
    res = scenario.resources
    assert (res.use_gpu, res.bf16, res.num_workers, res.zero_stage) == (False, False, 1, 2)
    assert res.attn_implementation == "sdpa"
    # the model's 128 positions cap max_length and the answers
    assert scenario.max_length == 128 and scenario.generation.max_new_tokens == 128


def test_zero_stage_and_batch_split_follow_the_model_size(assets, tmp_path):
    small = model_size(assets["model"])
    big = model_size(assets["llama8b"])
    assert small.parameters == assets["parameters"]
    assert 8.0e9 < big.parameters < 8.1e9  # Llama 3.1 8B: 8.03B
    assert big.parameters > ZERO3_ABOVE > small.parameters
    for model, zero, sft_micro in ((assets["model"], 2, 2), (assets["llama8b"], 3, 1)):
        out = tmp_path / f"gpu{zero}.yaml"
        assert init(assets, out, "--gpus-per-node", "8", "--nodes", "2", model=model) == 0
        scenario = load_scenario(str(out))
        res = scenario.resources
        assert (res.use_gpu, res.bf16, res.num_workers, res.zero_stage) == (True, True, 16, zero)
        assert scenario.sft.micro_batch_size == sft_micro and scenario.align.micro_batch_size == 1
        for recipe in (scenario.sft, scenario.align):
            assert recipe.global_batch_size == 128
            check_batch_split(recipe.global_batch_size, recipe.micro_batch_size, res.num_workers)
        accumulation = 128 // (sft_micro * 16)
        assert f"16 workers x {sft_micro} x {accumulation} accumulation = 128" in out.read_text()


def test_workers_that_do_not_divide_128_get_the_nearest_multiple():
    assert batch_split(128, 2, 8) == (128, 2, 8, "")
    assert batch_split(128, 2, 32) == (128, 2, 2, "")
    assert batch_split(128, 2, 128) == (128, 1, 1, "")
    total, micro, accumulation, note = batch_split(128, 2, 6)
    assert (total, micro, accumulation) == (126, 1, 21) and "nearest multiple" in note
    check_batch_split(total, micro, 6)


def test_a_model_with_no_local_config_is_sized_as_8b_and_says_so(assets, tmp_path, capsys):
    out = tmp_path / "hub.yaml"
    assert init(assets, out, "--gpus-per-node", "8", model="no-such-org/no-such-model") == 0
    assert "sized as an 8B model" in capsys.readouterr().err
    text = out.read_text()
    assert "model size unknown (no local config): ZeRO-3" in text
    assert load_scenario(str(out)).resources.zero_stage == 3


def test_set_overrides_apply_and_say_so(assets, tmp_path):
    out = tmp_path / "set.yaml"
    sets = ["max_length=1024", "generation.num_prompts=200", "grids.dpo.lrs=[1.0e-6]",
            "judge.num_prompts=100", "resources.checkpoint_every=50"]
    assert init(assets, out, *[a for s in sets for a in ("--set", s)]) == 0
    scenario = load_scenario(str(out))
    assert scenario.max_length == 1024 and scenario.generation.num_prompts == 200
    assert scenario.judge.num_prompts == 100 and scenario.resources.checkpoint_every == 50
    assert load_method_space("dpo", scenario).lrs == [1.0e-6]
    assert "# --set max_length (was 128)" in out.read_text()


@pytest.mark.parametrize(
    "override, named",
    [
        ("maxlength=1024", "unknown key 'maxlength' at the top level; valid keys: ["),
        ("sft.lrr=1e-6", "unknown key 'lrr' at sft; valid keys: ['adam_betas', 'epochs'"),
        ("grids.kto.betas=[0.1]", "unknown key 'kto' at grids; valid keys: ['apo_zero'"),
        ("sft.lr.x=1", "sft.lr is 6.0e-06, not a mapping"),
        ("max_length", "expected KEY=VALUE"),
        ("sft.lr=.nan", "lr must be a finite number > 0"),
        ("max_length=abc", "max_length must be a whole number, got 'abc'"),
        ("generation.temperature=[1", "VALUE is not YAML"),
    ],
)
def test_a_bad_set_fails_naming_the_key_and_writes_nothing(assets, tmp_path, capsys, override, named):
    out = tmp_path / "bad.yaml"
    assert init(assets, out, "--set", override) == 2
    err = capsys.readouterr().err
    assert named in err, err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_an_existing_file_is_kept_unless_forced(assets, tmp_path, capsys):
    out = tmp_path / "mine.yaml"
    assert init(assets, out) == 0
    before = out.read_text()
    assert init(assets, out, "--set", "seed=1") == 2
    assert "exists; pass --force" in capsys.readouterr().err and out.read_text() == before
    assert init(assets, out, "--set", "seed=1", "--force") == 0
    assert load_scenario(str(out)).seed == 1


def test_judges(assets, tmp_path, capsys):
    out = tmp_path / "alpaca.yaml"
    argv = ["init", "--model", assets["model"], "--preference-data", "HuggingFaceH4/ultrafeedback_binarized",
            "--judge", "alpaca_eval", "--out", str(out)]
    assert main(argv) == 0
    judge = load_scenario(str(out)).judge
    uf = load_scenario("llama31-8b-uf").judge
    assert (judge.type, judge.baseline, judge.extra_benchmarks) == (uf.type, uf.baseline, uf.extra_benchmarks)
    assert "benchmark_prompts: {}" in out.read_text() and "needs a local file" in out.read_text()
    out = tmp_path / "gpt.yaml"
    try:
        get_template("chat_side_by_side")
        extra = []
    except ValueError:  # the general chat prompt is not there yet: the TL;DR one stands in
        extra = ["--set", "judge.prompt_template=tldr_side_by_side"]
    argv[-3:] = ["openai:gpt-4o-2024-08-06", "--out", str(out), *extra]
    assert main(argv) == 0
    judge = load_scenario(str(out)).judge
    assert (judge.type, judge.model) == ("gpt_side_by_side", "gpt-4o-2024-08-06")
    assert (judge.endpoint_env, judge.api_key_env) == ("OPENAI_BASE_URL", "OPENAI_API_KEY")
    assert init(assets, tmp_path / "x.yaml", "--judge", "gpt4") == 2
    assert "--judge: expected one of reward_model:PATH, openai:MODEL, alpaca_eval" in capsys.readouterr().err


def test_a_single_file_of_pairs_holds_out_its_last_rows_for_validation(assets, tmp_path, capsys):
    """Only a model and one preference file: the file's last 10% are the validation set,
    the rest trains SFT (prompt + chosen) and alignment; `data check` passes on it."""
    out = tmp_path / "one.yaml"
    argv = ["init", "--model", assets["model"], "--preference-data", assets["pref"],
            "--judge", f"reward_model:{assets['rm']}", "--out", str(out)]
    assert main(argv) == 0
    data = load_scenario(str(out)).data
    splits = {w: data.source(w).split for w in ("sft", "preference", "validation")}
    assert splits == {"sft": "train[:-10%]", "preference": "train[:-10%]",
                      "validation": "train[-10%:]"}
    from raydaa.data.sources import load_rows

    rows = {w: load_rows(data.source(w))[0] for w in splits}
    whole = load_rows(assets["pref"])[0]
    assert len(rows["validation"]) == 4 and rows["validation"] == whole[-4:]
    assert rows["preference"] == whole[:-4]
    capsys.readouterr()
    assert main(["data", "check", "--scenario", str(out)]) == 0, capsys.readouterr().out


def test_the_emitter_reads_back_what_it_wrote():
    values = {"a": "yes", "b": "1e-6", "c": 1e-6, "d": None, "e": True, "f": {"g": [1, "x: y"]},
              "h": {}, "i": "# not a comment", "j": [0.9, 0.95]}
    text = render(values, {("a",): "one", ("f", "g"): "two\nthree"}, ["top"])
    assert yaml.safe_load(text) == values
    assert text.startswith("# top\n") and "# one" in text and "  # three" in text


def test_local_paths_typed_relative_are_written_absolute(assets, tmp_path, monkeypatch):
    """Ray workers run in folders of their own: a relative local path would not resolve
    there, so init writes it absolute; a hub id stays as typed."""
    from pathlib import Path

    monkeypatch.chdir(Path(assets["model"]).parent)
    out = tmp_path / "relative.yaml"
    argv = ["init", "--model", "model", "--preference-data", "pref.jsonl", "--sft-data",
            "sft.jsonl", "--validation-data", "val.jsonl", "--judge", "reward_model:model",
            "--out", str(out)]
    assert main(argv) == 0
    written = yaml.safe_load(out.read_text())
    assert written["model"]["hf_id"] == assets["model"]
    assert written["judge"]["model"] == assets["rm"]
    assert [written["data"][w] for w in ("sft", "preference", "validation")] == [
        assets["sft"], assets["pref"], assets["val"]]
    assert all(Path(written["data"][w]).is_absolute() for w in ("sft", "preference"))
    hub = init(assets, tmp_path / "hub.yaml", model="my-org/not-here")
    assert hub == 0
    assert yaml.safe_load((tmp_path / "hub.yaml").read_text())["model"]["hf_id"] == "my-org/not-here"


def test_model_sizes_read_in_their_own_unit():
    from raydaa.config.init_scenario import count

    assert [count(n) for n in (8_030_261_248, 494_032_768, 57_216, 12)] == [
        "8.03B", "494M", "57.2K", "12"]

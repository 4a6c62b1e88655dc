"""Every accepted row format, source kind and column mapping through `raydaa data check`,
and the preflight errors (missing or empty source, bad mapping, unknown format, validation
set without prompts, data.format contradicted), each raised before anything is trained.

Rows are the tiny task's words, so the tiny scenario's tokenizer (which has a chat
template) reads them; the scenarios are tiny's YAML with its data section replaced."""

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import yaml

from raydaa.cli import main as raydaa
from raydaa.config.loading import ConfigError
from raydaa.config.scenario import load_scenario, search_spaces_dir
from raydaa.data.errors import DataSourceError
from raydaa.data.formats import FORMATS
from raydaa.data.preflight import preflight, scenario_format, validation_set
from raydaa.data.tokenize import IGNORE_INDEX, prepare_preferences, prepare_sft
from raydaa.scenarios import build_tiny_tokenizer

PROMPTS = ["sort 3 1 2", "reverse 1 2", "sort 2 1", "reverse 4 5 6"]
ANSWERS = [("1 2 3", "3 2 1"), ("2 1", "1 2"), ("1 2", "2 1"), ("6 5 4", "4 5 6")]


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def pref_rows(fmt):
    """Four preference rows in format `fmt`."""
    rows = []
    for p, (good, bad) in zip(PROMPTS, ANSWERS, strict=True):
        rows.append({
            "standard_explicit": {"prompt": p, "chosen": " " + good, "rejected": " " + bad},
            "standard_implicit": {"chosen": f"{p} {good}", "rejected": f"{p} {bad}"},
            "conversational_explicit": {"prompt": [user(p)], "chosen": [assistant(good)],
                                        "rejected": [assistant(bad)]},
            "conversational_implicit": {"chosen": [user(p), assistant(good)],
                                        "rejected": [user(p), assistant(bad)]},
            "ultrafeedback": {"prompt": p, "chosen": [user(p), assistant(good)],
                              "rejected": [user(p), assistant(bad)], "score_chosen": 8.0},
        }[fmt])
    return rows


def sft_rows(fmt):
    rows = []
    for p, (good, _) in zip(PROMPTS, ANSWERS, strict=True):
        rows.append({
            "messages": {"messages": [user(p), assistant(good)]},
            "standard_prompt_completion": {"prompt": p, "completion": " " + good},
            "conversational_prompt_completion": {"prompt": [user(p)], "completion": [assistant(good)]},
            "text": {"text": f"{p} {good}"},
        }[fmt])
    return rows


# format -> the DataFormat it must be read as (kind, fields, conversational)
EXPECTED = {
    "standard_explicit": ("preference", ("prompt", "chosen", "rejected"), False),
    "standard_implicit": ("preference", ("chosen", "rejected"), False),
    "conversational_explicit": ("preference", ("prompt", "chosen", "rejected"), True),
    "conversational_implicit": ("preference", ("chosen", "rejected"), True),
    "ultrafeedback": ("preference", ("prompt", "chosen", "rejected"), True),
    "messages": ("sft", ("messages",), True),
    "standard_prompt_completion": ("sft", ("prompt", "completion"), False),
    "conversational_prompt_completion": ("sft", ("prompt", "completion"), True),
    "text": ("sft", ("text",), False),
}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def format_line(fmt_name):
    kind, fields, conversational = EXPECTED[fmt_name]
    [fmt] = [f for f in FORMATS if (f.kind, f.fields, f.conversational) == (kind, fields, conversational)]
    return f"format: {fmt}"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    build_tiny_tokenizer().save_pretrained(path)
    return path


def data_check(capsys, *args):
    """`raydaa data check ARGS`: (exit code, printed output)."""
    code = raydaa(["data", "check", *map(str, args)])
    return code, capsys.readouterr().out


@pytest.mark.parametrize("fmt", list(EXPECTED))
def test_every_format_through_data_check(fmt, tmp_path, tokenizer_dir, capsys):
    rows = sft_rows(fmt) if EXPECTED[fmt][0] == "sft" else pref_rows(fmt)
    path = write_jsonl(tmp_path / f"{fmt}.jsonl", rows)
    code, out = data_check(capsys, path, "--tokenizer", tokenizer_dir, "--max-length", 64)
    assert code == 0, out
    assert format_line(fmt) in out
    assert "rows 4, bad 0 (0.00%), kept 4" in out and "=> ok: 0.00% bad" in out


def scenario_yaml(tmp_path, data, name="fmt"):
    """tiny's scenario with `data` as its data section, written under tmp_path."""
    spec = yaml.safe_load((search_spaces_dir() / "scenarios" / "tiny.yaml").read_text())
    spec["name"], spec["data"] = name, data
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def nothing_trained(scenario_path, tmp_path, monkeypatch, *needles):
    """run_sft and run_search on the scenario both fail with the preflight's message
    (containing every needle) before any compute: no Ray, no file under the results."""
    from raydaa.sweep.search import SearchSettings, run_search
    from raydaa.train.stages import run_sft

    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "0")
    results = tmp_path / "results"
    for start in (lambda: run_sft(load_scenario(str(scenario_path)), results=results),
                  lambda: run_search(SearchSettings(method="dpo", scenario=str(scenario_path),
                                                    results=str(results)))):
        with pytest.raises(DataSourceError) as err:
            start()
        for needle in needles:
            assert needle in str(err.value)
    assert not ray.is_initialized()
    assert not results.exists() or not any(p.is_file() for p in results.rglob("*"))
    commands_stop_before_ray(scenario_path, tmp_path / "cli-results", monkeypatch, *needles)


def commands_stop_before_ray(scenario_path, results, monkeypatch, *needles):
    """`raydaa sft`, `search` and (for its data) `align` end with the same message (exit 2)
    before they connect to Ray: the spy that stands for the connection is never reached."""
    import contextlib
    import io

    import raydaa.cli.search as search_cli
    import raydaa.cli.stages as stages_cli
    from raydaa.cli import main

    reached = []
    for module in (search_cli, stages_cli):
        monkeypatch.setattr(module, "connect_ray", lambda *a, **k: reached.append(a))
    # align needs a registered reference before it looks at the data
    name = load_scenario(str(scenario_path)).name
    (results / name).mkdir(parents=True, exist_ok=True)
    (results / name / "reference.json").write_text('{"path": "/nowhere"}')
    where = ["--scenario", str(scenario_path), "--results", str(results)]
    commands = [["sft", *where], ["search", "--method", "dpo", *where]]
    if "data.sft" not in needles:  # align reads only the preference and validation data
        commands.append(["align", "--method", "dpo", "--beta", "0.1", "--lr", "1e-6", *where])
    for argv in commands:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(argv)
        assert code == 2, (argv, err.getvalue())
        for needle in needles:
            assert needle in err.getvalue(), (argv, err.getvalue())
    assert reached == []


CONVERSATIONAL_SCENARIOS = [
    ("messages", "conversational_explicit"), ("conversational_prompt_completion", "ultrafeedback"),
    ("messages", "conversational_implicit"),
]
PLAIN_SCENARIOS = [("text", "standard_explicit"), ("standard_prompt_completion", "standard_implicit")]


@pytest.mark.parametrize(("sft", "pref"), CONVERSATIONAL_SCENARIOS + PLAIN_SCENARIOS)
def test_scenario_formats_auto_inferred(sft, pref, tmp_path, capsys):
    data = {"sft": str(write_jsonl(tmp_path / "sft.jsonl", sft_rows(sft))),
            "preference": str(write_jsonl(tmp_path / "pref.jsonl", pref_rows(pref))),
            "validation": str(write_jsonl(tmp_path / "val.jsonl", pref_rows(pref))),
            "format": "auto", "sft_split": "train", "preference_split": "train",
            "validation_split": "train"}
    path = scenario_yaml(tmp_path, data)
    code, out = data_check(capsys, "--scenario", path)
    wanted = "conversational" if (sft, pref) in CONVERSATIONAL_SCENARIOS else "plain"
    assert code == 0, out
    assert f"data.format auto (inferred: {wanted})" in out and out.count("=> ok: 0.00% bad") == 3
    scenario = load_scenario(str(path))
    assert preflight(scenario) == scenario_format(scenario) == wanted
    val = validation_set(scenario)  # what evaluation samples on: the row's own prompt, or
    # the extracted one (UltraFeedback's stays a string: tiny's gold judge reads it)
    as_lists = pref in ("conversational_explicit", "conversational_implicit")
    assert [r["prompt"] for r in val.rows] == [[user(p)] if as_lists else p for p in PROMPTS]
    assert val.conversational == (wanted == "conversational")


def test_implicit_prompt_is_the_shared_prefix_and_text_trains_every_token():
    tok = build_tiny_tokenizer()
    prepared = prepare_preferences(pref_rows("standard_implicit"), tok, max_length=64)
    row = prepared.dataset[0]
    prompt_ids = tok("sort 3 1 2")["input_ids"]  # BOS + the shared prefix, masked
    assert row["chosen_input_ids"][: len(prompt_ids)] == prompt_ids
    assert row["chosen_labels"][: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
    assert row["chosen_labels"][len(prompt_ids):] == tok(" 1 2 3", add_special_tokens=False)["input_ids"] + [
        tok.eos_token_id]
    # text rows: no prompt, so the loss covers the whole text (only BOS, never predicted, is out)
    [text_row] = prepare_sft(sft_rows("text")[:1], tok, max_length=64).dataset
    assert text_row["input_ids"] == tok("sort 3 1 2 1 2 3")["input_ids"] + [tok.eos_token_id]
    assert text_row["labels"] == [IGNORE_INDEX] + text_row["input_ids"][1:]


def test_csv_parquet_arrow_save_to_disk_and_hub_layout_folders(tmp_path, tokenizer_dir, capsys):
    rows = pref_rows("standard_explicit")
    table = pa.Table.from_pylist(rows)
    csv = tmp_path / "pairs.csv"
    datasets.Dataset(table).to_csv(str(csv), index=False)
    pq.write_table(table, tmp_path / "pairs.parquet")
    with pa.OSFile(str(tmp_path / "pairs.arrow"), "wb") as f, pa.ipc.new_stream(f, table.schema) as w:
        w.write_table(table)
    datasets.DatasetDict({"train": datasets.Dataset(table), "test": datasets.Dataset(table.slice(0, 2))}
                         ).save_to_disk(str(tmp_path / "saved"))
    hub = tmp_path / "hub"  # the layout `load_dataset(folder)` reads: data/<split>-*.parquet
    (hub / "data").mkdir(parents=True)
    pq.write_table(table, hub / "data" / "train-00000-of-00001.parquet")
    pq.write_table(table.slice(0, 3), hub / "data" / "test-00000-of-00001.parquet")
    for source, split, n in (("pairs.csv", "train", 4), ("pairs.parquet", "train", 4),
                             ("pairs.arrow", "train", 4), ("saved", "test", 2), ("hub", "test", 3),
                             ("hub", "train", 4)):
        code, out = data_check(capsys, tmp_path / source, "--split", split, "--tokenizer", tokenizer_dir)
        assert code == 0, out
        assert format_line("standard_explicit") in out and f"rows {n}, bad 0" in out
    code, out = data_check(capsys, tmp_path / "saved", "--split", "validation")
    assert code == 2 and "no split 'validation'; its splits: ['test', 'train']" in out


def test_hub_layout_folder_config_name_through_a_scenario(tmp_path, capsys):
    """`name` picks a config of a hub-layout folder (its README's `configs`), as for a hub id."""
    hub = tmp_path / "hub"
    for config, fmt in (("pairs", "conversational_explicit"), ("chats", "messages")):
        (hub / config).mkdir(parents=True)
        rows = pref_rows(fmt) if config == "pairs" else sft_rows(fmt)
        datasets.Dataset.from_list(rows).to_parquet(str(hub / config / "train-00000-of-00001.parquet"))
    (hub / "README.md").write_text(
        "---\nconfigs:\n- config_name: pairs\n  data_files:\n  - split: train\n    path: pairs/*.parquet\n"
        "- config_name: chats\n  data_files:\n  - split: train\n    path: chats/*.parquet\n---\n")
    data = {"sft": {"path": str(hub), "name": "chats", "split": "train"},
            "preference": {"path": str(hub), "name": "pairs", "split": "train"},
            "validation": {"path": str(hub), "name": "pairs", "split": "train"}}
    code, out = data_check(capsys, "--scenario", scenario_yaml(tmp_path, data))
    assert code == 0, out
    assert format_line("messages") in out and format_line("conversational_explicit") in out


def test_column_mapping(tmp_path, capsys):
    theirs = [{"question": r["prompt"], "good": r["chosen"], "bad": r["rejected"], "id": i}
              for i, r in enumerate(pref_rows("conversational_explicit"))]
    pq.write_table(pa.Table.from_pylist(theirs), tmp_path / "theirs.parquet")
    write_jsonl(tmp_path / "val.jsonl", theirs)
    mapping = {"prompt": "question", "chosen": "good", "rejected": "bad"}
    talk = [{"conversation": r["messages"]} for r in sft_rows("messages")]
    data = {"sft": {"path": str(write_jsonl(tmp_path / "sft.jsonl", talk)),
                    "columns": {"messages": "conversation"}},
            "preference": {"path": str(tmp_path / "theirs.parquet"), "columns": mapping},
            "validation": {"path": str(tmp_path / "val.jsonl"), "split": "train", "columns": mapping}}
    path = scenario_yaml(tmp_path, data)
    code, out = data_check(capsys, "--scenario", path)
    assert code == 0, out
    assert out.count("=> ok: 0.00% bad") == 3 and "(inferred: conversational)" in out
    assert validation_set(load_scenario(str(path))).rows[0]["prompt"] == [user(PROMPTS[0])]


def test_mapped_column_missing(tmp_path, capsys, monkeypatch):
    good = str(write_jsonl(tmp_path / "pref.jsonl", pref_rows("conversational_explicit")))
    data = {"sft": str(write_jsonl(tmp_path / "sft.jsonl", sft_rows("messages"))),
            "preference": {"path": good, "columns": {"chosen": "winner"}},
            "validation": {"path": good, "split": "train"}}
    path = scenario_yaml(tmp_path, data)
    code, out = data_check(capsys, "--scenario", path)
    needles = ("data.preference", good, "columns.chosen maps to column 'winner', which it does "
               "not have; its columns: ['prompt', 'chosen', 'rejected']")
    assert code == 2 and all(n in out for n in needles), out
    nothing_trained(path, tmp_path, monkeypatch, *needles)


@pytest.mark.parametrize("case", ["text", "no_shared_prefix"])
def test_validation_set_without_prompts(case, tmp_path, capsys, monkeypatch):
    if case == "text":
        val = sft_rows("text")
        needles = ("data.validation", "val.jsonl", "column 'text' has none", "needs prompts")
    else:  # implicit prompt, but the second pair shares no leading text
        val = pref_rows("standard_implicit")
        val[1] = {"chosen": "2 1", "rejected": "1 2"}
        needles = ("data.validation", "val.jsonl", "row 1 has no prompt", "column chosen and rejected")
    data = {"sft": str(write_jsonl(tmp_path / "sft.jsonl", sft_rows("text"))),
            "preference": str(write_jsonl(tmp_path / "pref.jsonl", pref_rows("standard_explicit"))),
            "validation": str(write_jsonl(tmp_path / "val.jsonl", val)), "validation_split": "train"}
    path = scenario_yaml(tmp_path, data)
    code, out = data_check(capsys, "--scenario", path)
    assert code == 2 and all(n in out for n in needles), out
    nothing_trained(path, tmp_path, monkeypatch, *needles)


def test_unknown_format_lists_the_accepted_ones(tmp_path, capsys, monkeypatch):
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"question": p, "answer": a} for p, (a, _) in
                                                zip(PROMPTS, ANSWERS, strict=True)])
    code, out = data_check(capsys, odd)
    assert code == 2
    for needle in (str(odd), "no accepted sft format fits", "columns found: ['answer', 'question']",
                   "sft messages (", "sft prompt/completion (", "sft text (", "`columns:` mapping"):
        assert needle in out, out
    pref = str(write_jsonl(tmp_path / "pref.jsonl", pref_rows("conversational_explicit")))
    data = {"sft": str(odd), "preference": pref, "validation": pref, "validation_split": "train"}
    path = scenario_yaml(tmp_path, data)
    code, out = data_check(capsys, "--scenario", path)
    assert code == 2 and "data.sft" in out and str(odd) in out and "columns found" in out
    nothing_trained(path, tmp_path, monkeypatch, "data.sft", str(odd), "columns found",
                    "sft text (language modelling")


def test_nonexistent_and_empty_sources(tmp_path, capsys, monkeypatch):
    good = str(write_jsonl(tmp_path / "pref.jsonl", pref_rows("conversational_explicit")))
    sft = str(write_jsonl(tmp_path / "sft.jsonl", sft_rows("messages")))
    missing = tmp_path / "nowhere" / "prefs.jsonl"
    path = scenario_yaml(tmp_path, {"sft": sft, "preference": str(missing), "validation": good,
                                    "validation_split": "train"})
    code, out = data_check(capsys, "--scenario", path)
    needles = ("scenario fmt, data.preference", str(missing), "does not exist; expected a local file")
    assert code == 2 and all(n in out for n in needles), out
    nothing_trained(path, tmp_path, monkeypatch, *needles)

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, out = data_check(capsys, empty)
    assert code == 2 and f"{empty}: the file is empty (no rows)" in out and "REFUSED" not in out
    blank = write_jsonl(tmp_path / "blank.jsonl", [])
    blank.write_text("\n\n")
    assert data_check(capsys, blank)[1].count("no rows") == 1
    path = scenario_yaml(tmp_path, {"sft": sft, "preference": good, "validation": str(empty),
                                    "validation_split": "train"}, name="empty")
    code, out = data_check(capsys, "--scenario", path)
    assert code == 2 and "data.validation" in out and "no rows" in out and str(empty) in out
    nothing_trained(path, tmp_path, monkeypatch, "data.validation", str(empty), "no rows")


def test_declared_format_contradicted_by_the_data(tmp_path, capsys, monkeypatch):
    pref = str(write_jsonl(tmp_path / "pref.jsonl", pref_rows("conversational_explicit")))
    sft = str(write_jsonl(tmp_path / "sft.jsonl", sft_rows("messages")))
    path = scenario_yaml(tmp_path, {"sft": sft, "preference": pref, "validation": pref,
                                    "validation_split": "train", "format": "plain"})
    code, out = data_check(capsys, "--scenario", path)
    needles = ("data.validation", pref, "column 'chosen' holds message lists",
               "data.format is plain: expected strings")
    assert code == 2 and all(n in out for n in needles), out
    nothing_trained(path, tmp_path, monkeypatch, *needles)
    # mixed data under auto: the odd source is named
    plain = str(write_jsonl(tmp_path / "plain.jsonl", sft_rows("text")))
    path = scenario_yaml(tmp_path, {"sft": plain, "preference": pref, "validation": pref,
                                    "validation_split": "train"}, name="mixed")
    code, out = data_check(capsys, "--scenario", path)
    assert code == 2 and "data.sft" in out and "column 'text' holds strings" in out, out


def test_data_config_errors_name_the_key(tmp_path):
    base = {"sft": "tiny:sft_train", "preference": "tiny:pref_train", "validation": "tiny:pref_val"}
    cases = [
        ({**base, "preference": {"path": "p.jsonl", "split": "a"}, "preference_split": "b"},
         "data.preference.split ('a') and data.preference_split ('b') both give the split"),
        ({**base, "preference": {"path": "p.jsonl", "columns": {"question": "q"}}},
         "data.preference.columns: unknown field 'question'"),
        ({**base, "validation": {"split": "test"}}, "data.validation.path is required"),
        ({**base, "sft": {"path": "s.jsonl", "where": 1}}, "data.sft: unknown key(s) ['where']"),
        ({**base, "format": "chat"}, "data.format must be one of ['conversational', 'plain', 'auto']"),
    ]
    for i, (data, message) in enumerate(cases):
        with pytest.raises(ConfigError) as err:
            load_scenario(str(scenario_yaml(tmp_path, data, name=f"bad{i}")))
        assert message in str(err.value) and f"bad{i}.yaml" in str(err.value)
    shipped = load_scenario("llama32-3b-uf").data  # strings + *_split keys still work
    assert (shipped.source("sft").split, shipped.source("validation").split) == ("train_sft", "test_prefs")
    assert load_scenario("tiny").data.source("validation").split == "test"


@pytest.mark.parametrize("pref", ["conversational_explicit", "standard_implicit"])
def test_one_preference_file_is_sliced_and_is_also_the_sft_data(pref, tmp_path, capsys):
    """A user with one preference file: its first rows train (SFT on prompt + chosen, then
    the pairs), its last rows are the validation prompts (`datasets` split slicing)."""
    rows = pref_rows(pref) * 1  # 4 distinct pairs
    one = str(write_jsonl(tmp_path / "pairs.jsonl", rows))
    data = {"sft": {"path": one, "split": "train[:75%]"},
            "preference": {"path": one, "split": "train[:75%]"},
            "validation": {"path": one, "split": "train[75%:]"}}
    path = scenario_yaml(tmp_path, data)
    code, out = data_check(capsys, "--scenario", path)
    assert code == 0, out
    assert out.count("=> ok: 0.00% bad") == 3 and "prompt + chosen answer" in out, out
    scenario = load_scenario(str(path))
    assert [r["prompt"] for r in validation_set(scenario).rows] == [
        [user(PROMPTS[3])] if pref == "conversational_explicit" else PROMPTS[3]]
    tokenizer = build_tiny_tokenizer()
    sft = prepare_sft(scenario.data.source("sft"), tokenizer, max_length=64)
    assert len(sft.dataset) == 3  # rows 0-2; the validation row is held out
    texts = [tokenizer.decode([t for t, lab in zip(r["input_ids"], r["labels"], strict=True)
                               if lab != IGNORE_INDEX]) for r in sft.dataset]
    for text, (chosen, rejected) in zip(texts, ANSWERS[:3], strict=True):
        assert chosen in text and rejected not in text  # trained on the chosen answer alone


def test_a_bad_slice_names_the_file_and_the_syntax(tmp_path, capsys):
    one = str(write_jsonl(tmp_path / "pairs.jsonl", pref_rows("standard_explicit")))
    code, out = data_check(capsys, "--scenario", scenario_yaml(tmp_path, {
        "sft": one, "preference": one, "validation": {"path": one, "split": "test[90%:]"}}))
    assert code == 2 and one in out and "Unknown split \"test\"" in out and "train[90%:]" in out, out

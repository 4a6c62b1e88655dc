"""Data loading, validation, templating, truncation, fraction selection, collation and
fingerprints, on crafted local files and the tiny scenario's tokenizer."""

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raydaa.data.check import data_check_main
from raydaa.data.collators import PreferenceCollator, SFTCollator
from raydaa.data.errors import DataSourceError
from raydaa.data.sources import load_rows
from raydaa.data.tokenize import (
    IGNORE_INDEX,
    fingerprint,
    prepare_preferences,
    prepare_sft,
    select_fraction,
    truncate,
)
from raydaa.data.validation import DataValidationError, check_data
from raydaa.scenarios import TINY_MAX_LENGTH, build_tiny_tokenizer, tiny_datasets

LONG_PROMPT = "sort " + " ".join("7" * 80)  # 81 words + BOS: alone over the 64-token window


def turns(prompt, answer):
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def uf_row(prompt, chosen, rejected):
    """A row in HuggingFaceH4/ultrafeedback_binarized's schema."""
    return {"prompt": prompt, "prompt_id": "x", "chosen": turns(prompt, chosen),
            "rejected": turns(prompt, rejected), "score_chosen": 8.0, "score_rejected": 3.0}


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


@pytest.fixture
def bad_jsonl(tmp_path):
    """12 UltraFeedback-schema rows: 3 good, 9 bad, one per known reason or two."""
    rows = [
        uf_row("sort 3 1 2", "1 2 3", "3 2 1"),  # 0 good
        {"prompt": "sort 1 2", "rejected": turns("sort 1 2", "2 1")},  # 1 missing_field
        {**uf_row("sort 5 4", "4 5", "5 4"), "rejected": None},  # 2 missing_field (null)
        {**uf_row("sort 6 5", "5 6", "6 5"), "chosen": "5 6"},  # 3 wrong_type: text in a chat file
        "{not json",  # 4 malformed_json
        uf_row("sort 8 7", "   ", "8 7"),  # 5 empty_completion
        uf_row("sort 9 8", "8 9", "8 9"),  # 6 identical_pair
        uf_row("sort 3 1 2", "1 2 3", "3 2 1"),  # 7 duplicate of 0
        uf_row(LONG_PROMPT, "7 7", "7"),  # 8 prompt_over_length
        uf_row("reverse 1 2", "2 1", "1 2"),  # 9 good
        ["a", "list"],  # 10 wrong_type: not an object
        uf_row("sort 2 1", "1 2", "2 1"),  # 11 good
    ]
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n\n")
    return path


EXPECTED_JSONL = {"malformed_json": [4], "missing_field": [1, 2], "wrong_type": [3, 10],
                  "empty_completion": [5], "identical_pair": [6], "duplicate": [7],
                  "prompt_over_length": [8]}


def test_every_reason_counted_in_jsonl(bad_jsonl, tok):
    report = check_data(bad_jsonl, tokenizer=tok, max_length=TINY_MAX_LENGTH)
    assert (report.source, report.kind, report.conversational) == (str(bad_jsonl), "preference", True)
    assert report.total == 12 and report.n_bad == 9 and report.n_kept == 3
    assert report.fraction_bad == pytest.approx(0.75)
    assert report.counts == {reason: len(rows) for reason, rows in EXPECTED_JSONL.items()}
    assert {reason: [i for i, _ in shown] for reason, shown in report.first_rows.items()} == EXPECTED_JSONL
    assert report.first_rows["malformed_json"][0][1] == "{not json"
    table = report.format()
    assert str(bad_jsonl) in table and "identical_pair" in table and "75.00%" in table


def test_length_check_needs_a_tokenizer(bad_jsonl):
    report = check_data(bad_jsonl)
    assert report.max_length is None and report.counts["prompt_over_length"] == 0 and report.n_bad == 8
    assert "length check skipped" in report.format()


def test_every_reason_counted_in_parquet(tmp_path, tok):
    """TL;DR-preference schema (plain text), with nulls where JSON would omit a field
    (Arrow columns have one type, so wrong types and bad JSON cannot occur here)."""
    rows = [
        ("sort 3 1 2", " 1 2 3", " 3 2 1"),  # 0 good
        (None, " 1 2", " 2 1"),  # 1 missing_field
        ("sort 5 4", "", " 5 4"),  # 2 empty_completion
        ("sort 6 5", " 5 6", "  \n"),  # 3 empty_completion (whitespace)
        ("sort 9 8", " 8 9", " 8 9 "),  # 4 identical_pair (up to whitespace)
        ("sort 3 1 2", " 1 2 3", " 3 2 1"),  # 5 duplicate of 0
        (LONG_PROMPT, " 7", " 7 7"),  # 6 prompt_over_length
        ("sort 2 1", " 1 2", " 2 1"),  # 7 good
    ]
    path = tmp_path / "tldr.parquet"
    prompts, chosen, rejected = map(list, zip(*rows, strict=True))
    pq.write_table(pa.table({"prompt": prompts, "chosen": chosen, "rejected": rejected}), path)
    report = check_data(path, tokenizer=tok, max_length=TINY_MAX_LENGTH)
    assert (report.kind, report.conversational, report.total) == ("preference", False, 8)
    assert {r: [i for i, _ in s] for r, s in report.first_rows.items()} == {
        "missing_field": [1], "empty_completion": [2, 3], "identical_pair": [4], "duplicate": [5],
        "prompt_over_length": [6]}
    prepared = prepare_preferences(path, tok, max_length=TINY_MAX_LENGTH, threshold=0.8)
    assert prepared.dataset["index"] == [0, 7]


def test_wrong_type_in_plain_sft_jsonl_and_arrow_loading(tmp_path, tok):
    path = tmp_path / "tldr.jsonl"
    rows = [{"prompt": "sort 2 1", "completion": " 1 2"}, {"prompt": "sort 3 1", "completion": 13},
            {"prompt": ["sort 4 1"], "completion": " 1 4"}]
    path.write_text("\n".join(map(json.dumps, rows)))
    report = check_data(path)
    assert (report.kind, report.conversational) == ("sft", False)
    assert report.counts["wrong_type"] == 2 and [i for i, _ in report.first_rows["wrong_type"]] == [1, 2]

    arrow = tmp_path / "tldr.arrow"
    table = pa.table({"prompt": ["sort 2 1", "sort 3 1"], "completion": [" 1 2", ""]})
    with pa.OSFile(str(arrow), "wb") as f, pa.ipc.new_stream(f, table.schema) as writer:
        writer.write_table(table)
    report = check_data(arrow)
    assert report.total == 2 and report.counts["empty_completion"] == 1


def test_json_array_and_saved_dataset_folder(tmp_path):
    (tmp_path / "rows.json").write_text(json.dumps([{"prompt": "sort 2 1", "completion": " 1 2"}] * 2))
    report = check_data(tmp_path / "rows.json")
    assert report.total == 2 and report.counts["duplicate"] == 1
    tiny_datasets(0, n_sft=20, n_pref=2, n_val=2)["sft_train"].save_to_disk(str(tmp_path / "saved"))
    report = check_data(tmp_path / "saved")
    assert (report.total, report.kind, report.conversational, report.n_bad) == (20, "sft", True, 0)


def test_threshold_error_names_file_reasons_and_rows(bad_jsonl, tok):
    with pytest.raises(DataValidationError) as err:
        prepare_preferences(bad_jsonl, tok, max_length=TINY_MAX_LENGTH)
    message = str(err.value)
    assert str(bad_jsonl) in message and "9 of 12 rows" in message and "1.00% threshold" in message
    assert "missing_field 2 (rows 1, 2)" in message and "prompt_over_length 1 (rows 8)" in message
    # Above the bad fraction the run starts, the bad rows dropped but counted.
    prepared = prepare_preferences(bad_jsonl, tok, max_length=TINY_MAX_LENGTH, threshold=0.8)
    assert prepared.dataset["index"] == [0, 9, 11] and prepared.report.n_bad == 9


def test_data_check_main_exit_codes(bad_jsonl, tok, capsys):
    assert data_check_main(str(bad_jsonl), 0.01, tokenizer=tok) == 1
    out = capsys.readouterr().out
    assert "REFUSED" in out and "duplicate" in out
    assert data_check_main(str(bad_jsonl), 0.8) == 0
    assert data_check_main(str(bad_jsonl.parent / "missing.jsonl")) == 2
    assert data_check_main("tiny") == 0
    assert capsys.readouterr().out.count("=> ok: 0.00% bad") == 3


def test_truncate_rules():
    prompt, completion = list(range(10, 16)), [1, 2, 3]
    assert truncate(prompt, completion, 9) == (prompt, completion)  # fits
    assert truncate(prompt, completion, 7) == ([12, 13, 14, 15], completion)  # prompt cut from the left
    assert truncate([10, 11], list(range(20)), 7) == ([10, 11], [0, 1, 2, 3, 4])  # completion tail cut
    assert truncate(prompt, completion, 6) is None  # prompt fills the window: nothing of the completion fits


def test_left_truncation_keeps_completion_and_masks_prompt(tok):
    prompt = "sort 9 8 7 6 5 4 3 2"  # BOS + 9 tokens, + 4 completion tokens: 2 over the window
    rows = [{"prompt": prompt, "completion": " 0 1 2"}, {"prompt": LONG_PROMPT, "completion": " 7"}]
    prepared = prepare_sft(rows, tok, max_length=12, threshold=0.5)
    assert prepared.report.counts["prompt_over_length"] == 1  # dropped, and counted
    [row] = prepared.dataset
    full_prompt = tok(prompt)["input_ids"]
    completion = tok(" 0 1 2", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert len(row["input_ids"]) == 12
    assert row["input_ids"] == full_prompt[-8:] + completion  # prompt's start is what went
    assert row["labels"] == [IGNORE_INDEX] * 8 + completion


def test_prompt_length_boundary(tok):
    """A prompt of max_length - 1 tokens keeps one token of a completion longer than the
    window (its tail cut); a prompt of max_length tokens keeps none and is dropped."""
    short, long_ = "sort 1 2 3 4 5 6 7", "sort 1 2 3 4 5 6 7 8"  # BOS + 8, BOS + 9 tokens
    rows = [{"prompt": short, "completion": " 0 1 2 3 4 5 6 7 8 9"}, {"prompt": long_, "completion": " 0"},
            {"prompt": short, "completion": " 0 1"}]
    prepared = prepare_sft(rows, tok, max_length=10, threshold=0.5)
    assert [i for i, _ in prepared.report.first_rows["prompt_over_length"]] == [1]
    assert prepared.dataset["index"] == [0, 2]
    zero, one = tok.convert_tokens_to_ids(["0", "1"])
    assert prepared.dataset[0]["input_ids"] == tok(short)["input_ids"] + [zero]
    assert prepared.dataset[0]["labels"] == [IGNORE_INDEX] * 9 + [zero]
    # A completion shorter than the window is kept whole, the prompt cut from the left.
    assert prepared.dataset[1]["input_ids"] == tok(short)["input_ids"][-7:] + [zero, one, tok.eos_token_id]


def test_chat_template_for_conversational_sft(tok):
    rows = [{"prompt": "sort 3 1 2", "prompt_id": "a", "messages": turns("sort 3 1 2", "1 2 3")}]
    [row] = prepare_sft(rows, tok, max_length=TINY_MAX_LENGTH).dataset
    assert row["input_ids"] == tok.apply_chat_template(rows[0]["messages"])["input_ids"]
    n_prompt = len(tok.apply_chat_template(rows[0]["messages"][:1], add_generation_prompt=True)["input_ids"])
    assert tok.convert_ids_to_tokens(row["input_ids"][n_prompt - 1:]) == ["<|assistant|>", "1", "2", "3", "</s>"]
    assert row["labels"] == [IGNORE_INDEX] * n_prompt + row["input_ids"][n_prompt:]
    assert row["input_ids"].count(tok.eos_token_id) == 2  # end of user turn, end of answer: no double EOS


def test_plain_tldr_format_gets_no_template(tok):
    rows = [{"prompt": "sort 3 1 2", "completion": " 1 2 3"}]
    [row] = prepare_sft(rows, tok, max_length=TINY_MAX_LENGTH).dataset
    assert tok.convert_ids_to_tokens(row["input_ids"]) == ["<s>", "sort", "3", "1", "2", "1", "2", "3", "</s>"]
    assert row["labels"][:5] == [IGNORE_INDEX] * 5 and row["labels"][5:] == row["input_ids"][5:]


def test_ultrafeedback_pairs_from_tiny(tok):
    data = tiny_datasets(0, n_sft=10, n_pref=40, n_val=5)
    prepared = prepare_preferences(data["pref_train"], tok, max_length=TINY_MAX_LENGTH, name="tiny:pref")
    assert prepared.report.n_bad == 0 and prepared.report.source == "tiny:pref"
    assert prepared.dataset["index"] == list(range(40))
    row, source = prepared.dataset[3], data["pref_train"][3]
    n_prompt = row["chosen_labels"].count(IGNORE_INDEX)
    assert row["rejected_labels"].count(IGNORE_INDEX) == n_prompt  # the same prompt on both sides
    assert tok.decode(row["chosen_input_ids"][n_prompt:], skip_special_tokens=True) == source["chosen"][1]["content"]
    assert tok.decode(row["rejected_input_ids"][n_prompt:], skip_special_tokens=True) == \
        source["rejected"][1]["content"]


def test_fraction_reproducible_and_nested():
    ds = datasets.Dataset.from_dict({"index": list(range(1000))})
    small, again, large = select_fraction(ds, 0.1, 7), select_fraction(ds, 0.1, 7), select_fraction(ds, 0.5, 7)
    assert len(small) == 100 and len(large) == 500
    assert small["index"] == again["index"] and small["index"] == sorted(small["index"])
    assert set(small["index"]) <= set(large["index"])
    assert small["index"] != select_fraction(ds, 0.1, 8)["index"]
    assert len(select_fraction(ds, 0.01, 0)) == 10 and len(select_fraction(ds, 1.0, 0)) == 1000
    for bad in (0.0, 0.005, 1.5):
        with pytest.raises(ValueError):
            select_fraction(ds, bad, 0)


def test_prepare_sft_fraction(tok):
    sft = tiny_datasets(0, n_sft=200, n_pref=2, n_val=2)["sft_train"]
    a = prepare_sft(sft, tok, max_length=TINY_MAX_LENGTH, fraction=0.25, seed=1)
    b = prepare_sft(sft, tok, max_length=TINY_MAX_LENGTH, fraction=0.25, seed=1)
    assert len(a.dataset) == 50 and a.dataset["index"] == b.dataset["index"]
    assert a.report.total == 200  # the report is about the whole source


def test_sft_collation():
    rows = [{"index": 4, "input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
            {"index": 9, "input_ids": [5, 8], "labels": [-100, 8]}]
    batch = SFTCollator(pad_token_id=0)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 8, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, 8, -100]]
    assert batch["index"].tolist() == [4, 9] and batch["input_ids"].dtype == torch.long


def test_preference_collation(tok):
    data = tiny_datasets(0, n_sft=2, n_pref=8, n_val=2)["pref_train"]
    ds = prepare_preferences(data, tok, max_length=TINY_MAX_LENGTH).dataset
    batch = PreferenceCollator(tok.pad_token_id)(list(ds.select(range(5))))
    longest = max(len(x) for x in ds[:5]["chosen_input_ids"] + ds[:5]["rejected_input_ids"])
    for side in ("chosen", "rejected"):
        ids, mask, labels = (batch[f"{side}_{k}"] for k in ("input_ids", "attention_mask", "labels"))
        assert ids.shape == mask.shape == labels.shape == (5, longest)  # one T for both sides
        lengths = torch.tensor([len(x) for x in ds[:5][f"{side}_input_ids"]])
        assert mask.sum(1).tolist() == lengths.tolist()
        assert (ids[mask == 0] == tok.pad_token_id).all() and (labels[mask == 0] == IGNORE_INDEX).all()
        assert mask[:, 0].all()  # right padding
    assert batch["index"].tolist() == [0, 1, 2, 3, 4]


def test_fingerprint():
    ds = datasets.Dataset.from_dict({"index": [0, 1], "input_ids": [[1, 2, 3], [4, 5]]})
    fp = fingerprint(ds, max_length=64, template="t")
    assert fp == fingerprint(datasets.Dataset.from_dict(ds.to_dict()), max_length=64, template="t")
    as_int32 = ds.cast(datasets.Features({"index": datasets.Value("int32"),
                                          "input_ids": datasets.List(datasets.Value("int32"))}))
    assert fingerprint(as_int32, max_length=64, template="t") == fp
    halves = datasets.concatenate_datasets([ds.select([0]), ds.select([1])])  # other chunking / indices
    assert fingerprint(halves, max_length=64, template="t") == fp
    changed = datasets.Dataset.from_dict({"index": [0, 1], "input_ids": [[1, 2, 3], [4, 6]]})
    moved = datasets.Dataset.from_dict({"index": [0, 1], "input_ids": [[1, 2], [3, 4, 5]]})
    assert len({fp, fingerprint(changed, max_length=64, template="t"), fingerprint(moved, max_length=64, template="t"),
                fingerprint(ds, max_length=32, template="t"), fingerprint(ds, max_length=64, template="u"),
                fingerprint(ds.select([1]), max_length=64, template="t")}) == 6


def test_prepared_fingerprint_tracks_max_length(tok):
    rows = [{"prompt": "sort 3 1 2", "completion": " 1 2 3"}]
    a, b = prepare_sft(rows, tok, max_length=64), prepare_sft(rows, tok, max_length=64)
    assert a.fingerprint == b.fingerprint
    assert prepare_sft(rows, tok, max_length=32).fingerprint != a.fingerprint  # same tokens, other key


def test_load_rows_refuses_unknown_sources(tmp_path):
    with pytest.raises(DataSourceError, match="nope.jsonl does not exist; expected a local file"):
        load_rows(str(tmp_path / "nope.jsonl"))
    (tmp_path / "data.txt").write_text("a,b\n")
    with pytest.raises(DataSourceError, match="unsupported extension '.txt'"):
        load_rows(tmp_path / "data.txt")

"""Load, validate, template and tokenize SFT and preference data.

Sources: the paper's public datasets by hub name (UltraFeedback-binarized, UltraChat-200k,
Reddit TL;DR SFT and preferences), local JSONL / Parquet / Arrow files or `save_to_disk`
folders in the same schemas, or an in-memory `datasets.Dataset` (the `tiny` scenario).
Two formats: conversational (lists of {"role", "content"} messages, rendered with the
tokenizer's chat template) and plain text (TL;DR: prompt + completion strings).

Every row is checked before training; bad rows are dropped and counted by reason in a
`ValidationReport`, and a run refuses to start when their share is above a threshold
(1% by default): a broken file should stop a sweep, not quietly shrink it.

Tokenized data stays an Arrow-backed `datasets.Dataset` with a stable integer `index`
per row (the row's position in the source), which the reference log-prob cache uses
together with `fingerprint()`.

One module per step; import from the module (this package re-exports nothing):

    sources     reading rows: the public dataset registry (PUBLIC_DATASETS,
                public_dataset), JSONL / JSON / Arrow / Parquet readers, load_rows
    validation  the row checks and their ValidationReport: REASONS, check_data,
                DataValidationError, infer_kind, print_reports
    templating  rendering a row with the tokenizer's chat template (or as plain text)
    tokenize    truncate, tokenization, IGNORE_INDEX, fingerprint / template_id,
                Prepared, prepare_sft, prepare_preferences, select_fraction
    collators   padding tokenized rows into batches: SFTCollator, PreferenceCollator
    check       `raydaa data check` once its arguments are parsed: a scenario's or a
                file's reports, printed with their verdicts (data_check_main)
"""

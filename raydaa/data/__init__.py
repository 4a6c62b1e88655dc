"""Load, validate, template and tokenize SFT and preference data.

Sources: any hub dataset by id (the paper's four also by alias: UltraFeedback-binarized,
UltraChat-200k, Reddit TL;DR SFT and preferences), local JSONL / JSON / CSV / Parquet /
Arrow files, `save_to_disk` folders, hub-layout folders of shards, or an in-memory
`datasets.Dataset` (the `tiny` scenario); a scenario's source may name the dataset's
config, its split and a column mapping (raydaa.config.data_source.DataSource).
Formats: TRL's (formats.FORMATS): preference pairs with an explicit or implicit prompt,
SFT `messages`, prompt + completion, or plain `text`; each conversational (lists of
{"role", "content"} messages, rendered with the tokenizer's chat template) or standard
(strings, as they are).

Before any training, `preflight` checks that every source opens in an accepted format,
that the validation set has prompts and that `data.format` agrees with the data (or infers
it). Every row is then checked; bad rows are dropped and counted by reason in a
`ValidationReport`, and a run refuses to start when their share is above a threshold
(1% by default): a broken file should stop a sweep, not quietly shrink it.

Tokenized data stays an Arrow-backed `datasets.Dataset` with a stable integer `index`
per row (the row's position in the source), which the reference log-prob cache uses
together with `fingerprint()`.

One module per step; import from the module (this package re-exports nothing):

    errors      DataValidationError and its DataSourceError
    sources     reading rows: the public dataset registry (PUBLIC_DATASETS,
                public_dataset), the file / folder / hub readers, the column mapping,
                load_rows
    formats     the accepted row formats (FORMATS, DataFormat), detect_format, infer_kind
    validation  the row checks and their ValidationReport: REASONS, normalize,
                check_data, print_reports
    preflight   the cheap checks before stage 1 (preflight), the evaluation prompts
                (validation_set) and the format they render in (scenario_format)
    templating  rendering a row with the tokenizer's chat template (or as plain text)
    tokenize    truncate, tokenization, IGNORE_INDEX, fingerprint / template_id,
                Prepared, prepare_sft, prepare_preferences, select_fraction
    collators   padding tokenized rows into batches: SFTCollator, PreferenceCollator
    token_batches  batches sized by a token budget, not a row count, rows of similar
                length together (token_batches), and their results back in row order
                (in_original_order): the reference cache, KL scoring and sampling
    check       `raydaa data check` once its arguments are parsed: a scenario's or a
                file's reports, printed with their verdicts (data_check_main,
                scenario_check_main)
"""

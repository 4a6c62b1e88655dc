"""Defaults every command shares, in the config layer so that no lower layer imports the CLI."""

DEFAULT_RESULTS = "raydaa_results"
"""Where results go when --results is not given: relative to the working directory."""
DEFAULT_SCENARIO = "tiny"
"""The built-in scenario: it needs no GPU and no network."""
DEFAULT_BATCH_TOKENS = 16384
"""`resources.batch_tokens`: tokens per reference-cache, KL-scoring or sampling batch."""

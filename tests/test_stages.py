"""Both training stages on the tiny scenario: reference cache, step-0 losses, every method.

A shrunken tiny scenario (fewer SFT rows and steps) keeps the module to a few minutes; the
machinery (Ray Train V2, DeepSpeed ZeRO-2 on CPU, the cache) is the real one.
"""

import math

import pytest
import torch
import yaml

from raydaa.config.scenario import load_scenario, search_spaces_dir
from raydaa.config.search_space import AlignConfig
from raydaa.core.logprobs import concatenated_forward
from raydaa.core.losses import METHODS, get_spec
from raydaa.data.tokenize import load_tokenizer
from raydaa.io.models import pretrained_model
from raydaa.train.refcache import ReferenceLogps, ensure_reference_cache
from raydaa.train.stages import prepare, prepare_alignment, run_alignment, run_sft

pytestmark = [pytest.mark.ray, pytest.mark.deepspeed]
LN2 = math.log(2.0)


def small_tiny(tmp_path):
    """tiny with one short SFT epoch (1000 rows at fraction 0.25) and 16-pair align batches."""
    data = yaml.safe_load((search_spaces_dir() / "scenarios" / "tiny.yaml").read_text())
    data["sft"].update(epochs=1)
    data["align"].update(global_batch_size=16, micro_batch_size=8, epochs=1)
    path = tmp_path / "tiny-small.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_scenario(str(path))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, ray_cluster):
    tmp = tmp_path_factory.mktemp("stages")
    scenario = small_tiny(tmp)
    results = tmp / "results"
    reference = run_sft(scenario, results=results, fraction=0.25)
    shared = prepare_alignment(scenario, results=results)
    return scenario, results, reference, shared


def test_sft_registers_a_trained_reference_and_reuses_it(workspace):
    scenario, results, reference, _ = workspace
    assert reference["status"] == "finished" and reference["rows"] == 1000
    assert reference["final_loss"] < 2.5  # per-token NLL: ln(vocab≈60) = 4.1 at random init
    again = run_sft(scenario, results=results, fraction=0.25)
    assert again == reference  # computed once per scenario, then reused


def test_cached_reference_logps_equal_an_online_forward(workspace):
    """The Parquet cache holds what a reference forward gives now, within 1e-5 (fp32)."""
    scenario, results, reference, shared = workspace
    cache = ReferenceLogps.load(shared.cache)
    tokenizer = load_tokenizer(scenario)
    prepared = prepare(scenario, "preference", tokenizer)
    rows = prepared.dataset.select(range(0, len(prepared.dataset), 97))  # 16 spread-out rows
    from raydaa.data.collators import PreferenceCollator

    batch = PreferenceCollator(tokenizer.pad_token_id)(rows.to_list())
    model = pretrained_model(reference["path"], dtype=torch.float32).eval()
    with torch.no_grad():
        chosen, rejected = concatenated_forward(model, batch, tokenizer.pad_token_id)
    cached_c, cached_r = cache.lookup(batch["index"])
    torch.testing.assert_close(cached_c.sum, chosen.sum.double(), rtol=0, atol=1e-5)
    torch.testing.assert_close(cached_r.sum, rejected.sum.double(), rtol=0, atol=1e-5)
    assert torch.equal(cached_c.count, chosen.count.double())
    assert len(cache.position) == len(prepared.dataset)


def test_cache_is_computed_once_per_reference_and_data(workspace):
    scenario, results, reference, shared = workspace
    tokenizer = load_tokenizer(scenario)
    prepared = prepare(scenario, "preference", tokenizer)
    from raydaa.train import refcache

    calls = []
    original = refcache.compute_reference_logps
    refcache.compute_reference_logps = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        uri = ensure_reference_cache(
            reference["path"],
            prepared,
            str(results / scenario.name),
            pad_token_id=tokenizer.pad_token_id,
        )
    finally:
        refcache.compute_reference_logps = original
    assert uri == shared.cache and calls == []


def test_unknown_row_index_is_a_clear_error(workspace):
    cache = ReferenceLogps.load(workspace[3].cache)
    with pytest.raises(KeyError, match="not in the reference cache"):
        cache.lookup(torch.tensor([10**9]))


# Closed forms of each reference-based loss when the policy equals the reference (r = 0).
STEP0 = {
    "dpo": lambda b: LN2,
    "ipo": lambda b: 1 / (4 * b * b),
    "nca": lambda b: 2 * LN2,
    "cal_dpo": lambda b: LN2 + 1 / (2 * b * b),
    "apo_zero": lambda b: 1.0,
}
BETAS = {
    "dpo": 0.1,
    "ipo": 0.5,
    "simpo": 2.0,
    "nca": 0.01,
    "cal_dpo": 0.5,
    "apo_zero": 0.1,
    "orpo": 0.5,
    "asft": 0.5,
}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_at_the_reference_equals_its_closed_form(workspace, method):
    """Each method's training objective, as a worker calls it, on the SFT reference itself
    (π = π_ref) with the cached reference log-probs: the reference methods' losses equal
    their closed forms (DPO: ln 2), which ties the cache to the policy's own forward; every
    method's loss is finite and gives finite gradients."""
    from raydaa.data.collators import PreferenceCollator
    from raydaa.train.objectives import PreferenceObjective

    scenario, _, reference, shared = workspace
    tokenizer = load_tokenizer(scenario)
    rows = prepare(scenario, "preference", tokenizer).dataset.select(range(16)).to_list()
    batch = PreferenceCollator(tokenizer.pad_token_id)(rows)
    config = AlignConfig.from_config({"method": method, "beta": BETAS[method], "lr": 1e-3})
    objective = PreferenceObjective(config.loss, shared.cache, tokenizer.pad_token_id)
    model = pretrained_model(reference["path"], dtype=torch.float32)
    loss, metrics = objective(model, batch)
    assert math.isfinite(loss.item())
    if get_spec(method).needs_reference:
        assert loss.item() == pytest.approx(STEP0[method](BETAS[method]), rel=1e-5)
        assert abs(metrics["rewards/margin"]) < 1e-5
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


# Through Ray Train + DeepSpeed: one method of each kind (reference and pairwise; no
# reference and length-normalised; odds-based and pointwise). Every method's objective is
# checked above; the run's path does not depend on which loss it carries.
RAY_METHODS = ["dpo", "simpo", "asft"]


@pytest.mark.slow
@pytest.mark.parametrize("method", RAY_METHODS)
def test_one_alignment_run_of_each_kind_of_method(workspace, method):
    """Each trains 4 steps from the SFT reference. Step 1 is computed at the start, where
    π = π_ref: DPO's loss is ln 2 there, from the worker's cache lookup."""
    scenario, results, _, shared = workspace
    beta = BETAS[method]
    result = run_alignment(
        scenario,
        AlignConfig.from_config({"method": method, "beta": beta, "lr": 1e-3}),
        shared,
        results=results,
        stop_after_steps=4,
        log_every=1,
        export_hf=False,
    )
    assert result.status == "stopped", result.error
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    first = result.history[0]
    if get_spec(method).needs_reference:
        assert first["loss"] == pytest.approx(STEP0[method](beta), rel=1e-5)
        assert abs(first["rewards/margin"]) < 1e-5
    for key in ("rewards/chosen", "rewards/accuracy", "grad_norm", "lr", "tokens_per_s"):
        assert key in first


@pytest.mark.slow
def test_single_stage_orpo_with_sft_term(workspace):
    """Single-stage ORPO (sft_weight 1, β 1, λ 0.2) trains and reports its SFT-dominated loss."""
    scenario, results, _, shared = workspace
    result = run_alignment(
        scenario,
        AlignConfig.from_config({"method": "orpo", "beta": 1.0, "lr": 1e-3, "lambda_": 0.2, "sft_weight": 1.0}),
        shared,
        results=results,
        stop_after_steps=2,
        log_every=1,
        export_hf=False,
    )
    assert result.status == "stopped", result.error
    first = result.history[0]
    # loss = -log π_w (per token) + 0.2 · L_ORPO ≥ -logps/chosen
    assert first["loss"] >= -first["logps/chosen"] - 1e-6

"""`raydaa theory`: the paper's Theorems 3.4-3.6 measured on a real (tiny) language model.

For every method and β we take the exact gradient of its loss with respect to all model
parameters and report its cosine similarity with the gradient it should align with as
β → 0 (paper §3.2):

    Thm 3.6   IPO, SimPO, NCA, Cal-DPO, APO-Zero at β   vs  DPO at the same β
    Thm 3.4   β-ASFT                                    vs  ORPO (β = 1), and β-ORPO
    Thm 3.5   β-ORPO                                    vs  ORPO (β = 1), exact for all β

Gradients come from the chain rule, ∇θ L = Σ_i ∂L/∂log π_i · ∇θ log π_i: the per-sequence
gradients ∇θ log π_i are computed once by autograd through the model (2B backward passes)
and every method reuses them, which makes a sweep of 8 methods × 11 β values cheap.

"Per pair" is what the paper's proofs argue (one preference pair at a time). "Batch" is the
mean over pairs that training uses: the β → 0 limit also holds there when every pair's
weight tends to the same constant for both losses (Thm 3.6 at equal β), but not for
β-ASFT against ORPO at β = 1, whose per-pair weights 1 - σ(Δo_i) differ across pairs.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from raydaa.core.logprobs import IGNORE_INDEX, SequenceLogps, concatenated_forward
from raydaa.core.losses import preference_loss

DEFAULT_BETAS = (1.0, 0.5, 0.1, 0.05, 0.01, 5e-3, 1e-3, 1e-4, 1e-5)


@dataclass(frozen=True)
class Comparison:
    """Method X at β against a target method at β (target_beta=None) or a fixed β."""

    method: str
    target: str
    target_beta: float | None
    theorem: str

    @property
    def label(self) -> str:
        target = (
            self.target if self.target_beta is None else f"{self.target}(β={self.target_beta:g})"
        )
        return f"{self.method} vs {target}"


COMPARISONS = (
    Comparison("ipo", "dpo", None, "3.6"),
    Comparison("simpo", "dpo", None, "3.6"),
    Comparison("nca", "dpo", None, "3.6"),
    Comparison("cal_dpo", "dpo", None, "3.6"),
    Comparison("apo_zero", "dpo", None, "3.6"),
    Comparison("asft", "orpo", 1.0, "3.4"),
    Comparison("asft", "orpo", None, "3.4, equal β"),
    Comparison("orpo", "orpo", 1.0, "3.5"),
)


def build_tiny_llama(seed: int, vocab_size: int = 64) -> LlamaForCausalLM:
    """A random-init Llama of ~23k parameters in float64 (cosines near 1 need the digits;
    transformers' LlamaRMSNorm still computes in float32, which bounds gradients at ~1e-7).

    initializer_range 0.3 (not 0.02) makes next-token distributions peaked, so sequence
    log-probs, and the rewards built from them, spread over a realistic range.
    """
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        initializer_range=0.3,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).to(torch.float64).eval()


def make_pairs(seed: int, n_pairs: int, vocab_size: int = 64) -> dict[str, torch.Tensor]:
    """Preference pairs of real token sequences: a shared prompt, two different completions
    of varied lengths, right-padded, labels = -100 on prompt and padding."""
    g = torch.Generator().manual_seed(seed)
    batch: dict[str, list[torch.Tensor]] = {}
    for _ in range(n_pairs):
        prompt = torch.randint(
            1, vocab_size, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g
        )
        for side in ("chosen", "rejected"):
            completion = torch.randint(
                1, vocab_size, (int(torch.randint(2, 12, (1,), generator=g)),), generator=g
            )
            ids = torch.cat([prompt, completion])
            labels = torch.cat([torch.full_like(prompt, IGNORE_INDEX), completion])
            batch.setdefault(f"{side}_input_ids", []).append(ids)
            batch.setdefault(f"{side}_labels", []).append(labels)
    out = {}
    for side in ("chosen", "rejected"):
        ids = torch.nn.utils.rnn.pad_sequence(batch[f"{side}_input_ids"], batch_first=True)
        out[f"{side}_input_ids"] = ids
        out[f"{side}_attention_mask"] = torch.nn.utils.rnn.pad_sequence(
            [torch.ones_like(t) for t in batch[f"{side}_input_ids"]], batch_first=True
        )
        out[f"{side}_labels"] = torch.nn.utils.rnn.pad_sequence(
            batch[f"{side}_labels"], batch_first=True, padding_value=IGNORE_INDEX
        )
    return out


def perturbed_copy(model: LlamaForCausalLM, scale: float, seed: int) -> LlamaForCausalLM:
    """A reference policy near the policy: θ_ref = θ + scale · std(θ) · N(0, 1) per tensor.
    A reference equal to the policy makes every r^ref zero and every method trivially
    collinear; a nearby one is the realistic mid-training situation."""
    reference = LlamaForCausalLM(model.config).to(torch.float64).eval()
    reference.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(
                scale * p.std().nan_to_num(0.0) * torch.randn(p.shape, generator=g, dtype=p.dtype)
            )
    return reference


@dataclass
class GradientProbe:
    """Per-sequence log-probs of a batch and their parameter gradients (the Jacobian)."""

    chosen: SequenceLogps
    rejected: SequenceLogps
    ref_chosen: SequenceLogps
    ref_rejected: SequenceLogps
    jac_chosen: torch.Tensor  # (B, P): ∇θ Σ_t log π(y_w,t | ...) per pair
    jac_rejected: torch.Tensor  # (B, P)

    def logps(self, normalize: bool) -> tuple[torch.Tensor, ...]:
        return (
            self.chosen.reduce(normalize),
            self.rejected.reduce(normalize),
            self.ref_chosen.reduce(normalize),
            self.ref_rejected.reduce(normalize),
        )


def probe_gradients(
    policy: LlamaForCausalLM, reference: LlamaForCausalLM, batch: dict[str, torch.Tensor]
) -> GradientProbe:
    """Forward both models once, then one backward pass per sequence for the Jacobian."""
    params = [p for p in policy.parameters() if p.requires_grad]
    chosen, rejected = concatenated_forward(policy, batch)
    with torch.no_grad():
        ref_chosen, ref_rejected = concatenated_forward(reference, batch)
    rows = []
    sums = torch.cat([chosen.sum, rejected.sum])
    for i in range(sums.shape[0]):
        grads = torch.autograd.grad(sums[i], params, retain_graph=True)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    jac = torch.stack(rows)
    half = chosen.sum.shape[0]
    detach = lambda s: SequenceLogps(s.sum.detach(), s.count)  # noqa: E731
    return GradientProbe(
        detach(chosen), detach(rejected), ref_chosen, ref_rejected, jac[:half], jac[half:]
    )


def per_pair_gradients(
    probe: GradientProbe, method: str, beta: float, normalize: bool = True
) -> torch.Tensor:
    """(B, P): ∇θ of each pair's alignment loss (sft_weight 0, λ 1), by the chain rule."""
    pi_w, pi_l, ref_w, ref_l = probe.logps(normalize)
    pi_w, pi_l = pi_w.clone().requires_grad_(True), pi_l.clone().requires_grad_(True)
    losses = preference_loss(method, pi_w, pi_l, ref_w, ref_l, beta=beta).losses
    # each loss_i depends on pair i only, so d(Σ loss)/d log π_i is pair i's own coefficient
    coef_w, coef_l = torch.autograd.grad(losses.sum(), (pi_w, pi_l))
    if normalize:  # ∇ (sum / count) = ∇ sum / count
        coef_w, coef_l = coef_w / probe.chosen.count, coef_l / probe.rejected.count
    return coef_w[:, None] * probe.jac_chosen + coef_l[:, None] * probe.jac_rejected


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity along the last dim; 1.0 when both vectors vanish."""
    num = (a * b).sum(-1)
    den = a.norm(dim=-1) * b.norm(dim=-1)
    return torch.where(
        den > 0, num / den.clamp(min=torch.finfo(a.dtype).tiny), torch.ones_like(num)
    )


@dataclass(frozen=True)
class CosineRow:
    beta: float
    comparison: Comparison
    batch: float  # cosine of the batch-mean gradients
    pair_min: float  # worst pair's cosine
    pair_mean: float


def collinearity_table(
    probe: GradientProbe, betas=DEFAULT_BETAS, normalize: bool = True
) -> list[CosineRow]:
    rows = []
    for beta in betas:
        for comp in COMPARISONS:
            g_x = per_pair_gradients(probe, comp.method, beta, normalize)
            g_t = per_pair_gradients(probe, comp.target, comp.target_beta or beta, normalize)
            per_pair = cosine(g_x, g_t)
            batch = cosine(g_x.mean(0), g_t.mean(0))
            rows.append(
                CosineRow(beta, comp, float(batch), float(per_pair.min()), float(per_pair.mean()))
            )
    return rows


def format_table(rows: list[CosineRow], kind: str = "batch") -> str:
    """Markdown table: one row per β, one column per comparison."""
    labels = [c.label for c in COMPARISONS]
    betas = sorted({r.beta for r in rows}, reverse=True)
    value = {(r.beta, r.comparison.label): getattr(r, kind) for r in rows}
    lines = ["| β | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for beta in betas:
        lines.append(
            f"| {beta:g} | " + " | ".join(f"{value[beta, lab]:+.4f}" for lab in labels) + " |"
        )
    return "\n".join(lines)


def plot(rows: list[CosineRow], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, kind, title in (
        (axes[0], "batch", "batch-mean gradient"),
        (axes[1], "pair_min", "worst single pair"),
    ):
        for comp in COMPARISONS:
            pts = sorted((r.beta, getattr(r, kind)) for r in rows if r.comparison == comp)
            ax.plot(
                [b for b, _ in pts],
                [v for _, v in pts],
                marker="o",
                label=f"{comp.label} (Thm {comp.theorem})",
            )
        ax.set_xscale("log")
        ax.set_xlabel("β")
        ax.set_title(f"cosine with target gradient: {title}")
        ax.axhline(1.0, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cosine similarity")
    axes[1].legend(fontsize=7, loc="lower left")
    fig.suptitle("Paper §3.2: DAA gradients become collinear as β → 0 (tiny random-init Llama)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(
    out_dir: Path,
    seed: int = 0,
    n_pairs: int = 8,
    ref_noise: float = 0.3,
    normalize: bool = True,
    betas=DEFAULT_BETAS,
) -> list[CosineRow]:
    policy = build_tiny_llama(seed)
    reference = perturbed_copy(policy, ref_noise, seed + 1)
    batch = make_pairs(seed, n_pairs, policy.config.vocab_size)
    probe = probe_gradients(policy, reference, batch)
    rows = collinearity_table(probe, betas, normalize)

    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "theory.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "beta",
                "method",
                "target",
                "target_beta",
                "theorem",
                "cos_batch",
                "cos_pair_min",
                "cos_pair_mean",
            ]
        )
        for r in rows:
            c = r.comparison
            w.writerow(
                [
                    r.beta,
                    c.method,
                    c.target,
                    c.target_beta or r.beta,
                    c.theorem,
                    r.batch,
                    r.pair_min,
                    r.pair_mean,
                ]
            )
    plot(rows, out_dir / "theory.png")
    return rows


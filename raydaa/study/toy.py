"""The paper's toy example (Appendix H, Figure 4): pairwise vs pointwise ranking losses on
a one-hidden-layer ReLU MLP reward model. Pure maths and report files; no Ray here (the
Ray Tune sweep is `raydaa.study.toy_tune`).

    data      2000 triplets (x, y_w, y_l) of real scalars with y_w > y_l, 80% train / 20% test
    model     r(x, y) = w2 · ReLU(W1 [x, y] + b1) + b2, hidden size 1 (lower capacity) or 3
    losses    pairwise   -log σ(β(r_w - r_l))                      (Bradley-Terry)
              pointwise  -[log σ(β r_w) + log σ(-β r_l)]
    metric    ranking accuracy on the test triplets: the share with r_w > r_l (strictly)
    grid      lr {0.5, 0.3, 0.1, 0.01, 0.03, 0.05} × β {5, 2, 1, 0.2, 0.1, 0.05, 0.01},
              100 runs per configuration

The appendix leaves these choices open; raydaa's, each a named default below:
  - the distribution of x and y: x, y_a, y_b i.i.d. N(0, 1), y_w = max(y_a, y_b),
    y_l = min(y_a, y_b). The appendix only says y_w > y_l, so the preference does not
    depend on x and r(x, y) = y ranks every triplet correctly: a hidden size of 1 can
    represent a perfect ranker (ReLU(y + c) is linear in y once c is large enough).
  - optimizer and schedule: Adam (torch defaults besides lr), minibatches of 64, 20 epochs.
  - initialization: PyTorch's nn.Linear default, U(-1/√fan_in, 1/√fan_in) for every weight.
  - what varies across the 100 runs: the initialization and minibatch order (seeded per
    run); the data set is the same for all runs (one data seed).
  - ties (r_w = r_l, e.g. both inputs in a ReLU's dead region) count as errors, since the
    appendix defines accuracy as the share of cases with r_w > r_l; the tie rate is reported.
  - selection: the best (lr, β) per (loss, hidden size) is the one with the highest mean test
    accuracy over the runs (the appendix has no validation split).

All runs of one (loss, hidden size, lr) are trained at once as one batch of independent
models, shape (len(betas) · runs, ...): every model's parameters, minibatches and Adam state
are its own, so the result equals training each run alone (tested).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from raydaa.io import storage

LOSSES = ("pairwise", "pointwise")
HIDDEN_SIZES = (1, 3)
LEARNING_RATES = (0.5, 0.3, 0.1, 0.01, 0.03, 0.05)  # Appendix H, in the paper's order
BETAS = (5.0, 2.0, 1.0, 0.2, 0.1, 0.05, 0.01)  # Appendix H
RUNS = 100  # Appendix H: "each configuration was trained over 100 runs"

N_TRIPLETS = 2000
TEST_FRACTION = 0.2
Z_95 = 1.96  # normal 95% interval of a mean over runs


# --- data --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Triplets:
    """(n,) float32 tensors with y_w > y_l elementwise."""

    x: torch.Tensor
    y_w: torch.Tensor
    y_l: torch.Tensor

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class ToyData:
    train: Triplets
    test: Triplets


def make_triplets(
    n: int = N_TRIPLETS, seed: int = 0, test_fraction: float = TEST_FRACTION
) -> ToyData:
    """n triplets, x and two candidates i.i.d. N(0, 1), the larger candidate preferred;
    the first (1 - test_fraction) · n are the training set, the rest the test set."""
    if n < 2 or not 0 < test_fraction < 1:
        raise ValueError(f"need n >= 2 and 0 < test_fraction < 1, got n={n}, {test_fraction}")
    n_test = round(n * test_fraction)
    if not 0 < n_test < n:
        raise ValueError(f"test_fraction={test_fraction} of n={n} leaves an empty split")
    g = torch.Generator().manual_seed(seed)
    x, y_a, y_b = torch.randn(3, n, generator=g, dtype=torch.float64)
    # A tie has probability 0 in float64; kept out explicitly so y_w > y_l always holds.
    while bool((y_a == y_b).any()):
        same = y_a == y_b
        y_b[same] = torch.randn(int(same.sum()), generator=g, dtype=torch.float64)
    y_w, y_l = torch.maximum(y_a, y_b).float(), torch.minimum(y_a, y_b).float()
    x = x.float()
    cut = n - n_test
    return ToyData(
        train=Triplets(x[:cut], y_w[:cut], y_l[:cut]),
        test=Triplets(x[cut:], y_w[cut:], y_l[cut:]),
    )


# --- losses (Appendix H) -----------------------------------------------------------------


def pairwise_loss(r_w: torch.Tensor, r_l: torch.Tensor, beta) -> torch.Tensor:
    """Bradley-Terry: -log σ(β (r_w - r_l)), elementwise (broadcasts β)."""
    return -F.logsigmoid(beta * (r_w - r_l))


def pointwise_loss(r_w: torch.Tensor, r_l: torch.Tensor, beta) -> torch.Tensor:
    """-[log σ(β r_w) + log σ(-β r_l)], elementwise: each reward judged against 0 alone."""
    return -(F.logsigmoid(beta * r_w) + F.logsigmoid(-beta * r_l))


LOSS_FUNCTIONS = {"pairwise": pairwise_loss, "pointwise": pointwise_loss}


# --- a batch of independent MLPs ------------------------------------------------------------


@dataclass
class MLPBatch:
    """M independent MLPs R^2 -> R with one hidden ReLU layer of size H.

    w1 (M, 2, H), b1 (M, 1, H), w2 (M, H, 1), b2 (M, 1, 1)."""

    w1: torch.Tensor
    b1: torch.Tensor
    w2: torch.Tensor
    b2: torch.Tensor

    def parameters(self) -> list[torch.Tensor]:
        return [self.w1, self.b1, self.w2, self.b2]

    def rewards(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y (M, B) -> r (M, B), model m scoring row m."""
        inputs = torch.stack([x, y], dim=-1)  # (M, B, 2)
        hidden = torch.relu(torch.baddbmm(self.b1, inputs, self.w1))  # (M, B, H)
        return torch.baddbmm(self.b2, hidden, self.w2).squeeze(-1)

    @staticmethod
    def init(generators: Sequence[torch.Generator], hidden: int) -> MLPBatch:
        """One MLP per generator, nn.Linear's default init U(-1/√fan_in, 1/√fan_in)."""

        def uniform(g, shape, fan_in):
            return (torch.rand(shape, generator=g) * 2 - 1) / math.sqrt(fan_in)

        per_model = [
            (
                uniform(g, (2, hidden), 2),
                uniform(g, (1, hidden), 2),
                uniform(g, (hidden, 1), hidden),
                uniform(g, (1, 1), hidden),
            )
            for g in generators
        ]
        return MLPBatch(*(torch.stack(p) for p in zip(*per_model, strict=True)))


# --- training ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ToySettings:
    epochs: int = 20
    """Passes over the 1600 training triplets (the appendix does not say)."""
    batch_size: int = 64
    """Triplets per Adam step (the appendix does not say)."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self}")


DEFAULT_SETTINGS = ToySettings()


@dataclass(frozen=True)
class RunResults:
    """Test metrics of every run: accuracy and tie_rate are (len(betas), len(seeds))."""

    betas: tuple[float, ...]
    seeds: tuple[int, ...]
    accuracy: torch.Tensor
    tie_rate: torch.Tensor
    final_train_loss: torch.Tensor


def _run_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    # One generator per run, so a run's init and minibatch order depend on its seed only.
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def train_runs(
    data: ToyData,
    *,
    loss: str,
    hidden: int,
    lr: float,
    betas: Sequence[float],
    seeds: Sequence[int],
    settings: ToySettings = DEFAULT_SETTINGS,
) -> tuple[RunResults, MLPBatch]:
    """Train len(betas) × len(seeds) MLPs at once; model (i, j) uses betas[i] and seeds[j].

    Runs with the same seed share their initialization and minibatch order across β (and
    across losses and learning rates), so β's are compared on the same draws."""
    if loss not in LOSS_FUNCTIONS:
        raise ValueError(f"unknown toy loss {loss!r}; expected one of {LOSSES}")
    if hidden < 1 or not (lr > 0 and math.isfinite(lr)) or not betas or not seeds:
        raise ValueError(f"need hidden >= 1, lr > 0, betas and seeds, got {hidden}, {lr}")
    loss_fn = LOSS_FUNCTIONS[loss]
    n_beta, n_seed = len(betas), len(seeds)
    generators = _run_generators(seeds)
    models = MLPBatch.init(generators, hidden)
    # (S, ...) -> (n_beta · S, ...), β-major: model index = i · S + j.
    models = MLPBatch(*(p.repeat(n_beta, 1, 1).requires_grad_() for p in models.parameters()))
    beta = torch.tensor(betas, dtype=torch.float32).repeat_interleave(n_seed)[:, None]  # (M, 1)
    optimizer = torch.optim.Adam(models.parameters(), lr=lr)
    train, n = data.train, len(data.train)
    last = torch.zeros(n_beta * n_seed)
    for _ in range(settings.epochs):
        order = torch.stack([torch.randperm(n, generator=g) for g in generators])  # (S, n)
        order = order.repeat(n_beta, 1)  # (M, n)
        for start in range(0, n, settings.batch_size):
            idx = order[:, start : start + settings.batch_size]  # (M, B)
            b = idx.shape[1]
            x = train.x[idx]
            r = models.rewards(torch.cat([x, x], 1), torch.cat([train.y_w[idx], train.y_l[idx]], 1))
            per_model = loss_fn(r[:, :b], r[:, b:], beta).mean(dim=1)  # (M,)
            optimizer.zero_grad(set_to_none=True)
            # Models share no parameters: the sum's gradient w.r.t. model m is its own mean's.
            per_model.sum().backward()
            optimizer.step()
            last = per_model.detach()
    accuracy, tie_rate = ranking_accuracy(models, data.test)
    shape = (n_beta, n_seed)
    results = RunResults(
        tuple(float(b) for b in betas),
        tuple(int(s) for s in seeds),
        accuracy.view(shape),
        tie_rate.view(shape),
        last.view(shape),
    )
    return results, models


@torch.no_grad()
def ranking_accuracy(models: MLPBatch, triplets: Triplets) -> tuple[torch.Tensor, torch.Tensor]:
    """Per model: share of triplets with r_w > r_l (strictly), and share with r_w == r_l."""
    m = models.w1.shape[0]
    x = triplets.x.expand(m, -1)
    r_w = models.rewards(x, triplets.y_w.expand(m, -1))
    r_l = models.rewards(x, triplets.y_l.expand(m, -1))
    return (r_w > r_l).float().mean(dim=1), (r_w == r_l).float().mean(dim=1)


# --- summaries and report files ------------------------------------------------------------


@dataclass(frozen=True)
class ConfigResult:
    """One (loss, hidden, lr, β) configuration over its runs."""

    loss: str
    hidden: int
    lr: float
    beta: float
    runs: int
    accuracy: float
    accuracy_low: float
    accuracy_high: float
    accuracy_std: float
    tie_rate: float


def mean_interval(values: torch.Tensor) -> tuple[float, float, float, float]:
    """Mean of per-run accuracies, its normal 95% interval (1.96 standard errors, clipped
    to [0, 1], where an accuracy lives) and the standard deviation."""
    values = values.double()
    mean = values.mean().item()
    if len(values) < 2:
        return mean, math.nan, math.nan, math.nan
    std = values.std().item()
    half = Z_95 * std / math.sqrt(len(values))
    return mean, max(0.0, mean - half), min(1.0, mean + half), std


def summarize(loss: str, hidden: int, lr: float, results: RunResults) -> list[ConfigResult]:
    rows = []
    for i, beta in enumerate(results.betas):
        mean, low, high, std = mean_interval(results.accuracy[i])
        rows.append(
            ConfigResult(
                loss,
                hidden,
                float(lr),
                beta,
                len(results.seeds),
                mean,
                low,
                high,
                std,
                results.tie_rate[i].double().mean().item(),
            )
        )
    return rows


def best_configs(rows: Sequence[ConfigResult]) -> list[ConfigResult]:
    """Highest mean test accuracy per (loss, hidden), ties broken by the smaller lr then β
    (deterministic); ordered by hidden size, then loss."""
    best: dict[tuple[str, int], ConfigResult] = {}
    for row in sorted(rows, key=lambda r: (r.lr, r.beta)):
        key = (row.loss, row.hidden)
        if key not in best or row.accuracy > best[key].accuracy:
            best[key] = row
    return [best[k] for k in sorted(best, key=lambda k: (k[1], LOSSES.index(k[0])))]


def _pct(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{100 * v:.2f}"


def best_table(best: Sequence[ConfigResult]) -> str:
    lines = [
        "| hidden size | loss | best lr | best β | test accuracy % [95% CI] | ties % | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in best:
        lines.append(
            f"| {r.hidden} | {r.loss} | {r.lr:g} | {r.beta:g} | {_pct(r.accuracy)} "
            f"[{_pct(r.accuracy_low)}, {_pct(r.accuracy_high)}] | {_pct(r.tie_rate)} | {r.runs} |"
        )
    return "\n".join(lines)


def grid_table(rows: Sequence[ConfigResult]) -> str:
    """Mean test accuracy % of every configuration: one row per (hidden, loss, lr), one
    column per β."""
    betas = sorted({r.beta for r in rows}, reverse=True)
    value = {(r.hidden, r.loss, r.lr, r.beta): r.accuracy for r in rows}
    keys = sorted(
        {(r.hidden, r.loss, r.lr) for r in rows}, key=lambda k: (k[0], LOSSES.index(k[1]), -k[2])
    )
    lines = [
        "| hidden | loss | lr | " + " | ".join(f"β={b:g}" for b in betas) + " |",
        "|---|---|---|" + "---|" * len(betas),
    ]
    for h, loss, lr in keys:
        cells = [_pct(value.get((h, loss, lr, b), math.nan)) for b in betas]
        lines.append(f"| {h} | {loss} | {lr:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _csv_bytes(rows: Sequence[ConfigResult]) -> bytes:
    buf = io.StringIO()
    fields = list(ConfigResult.__dataclass_fields__)
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(asdict(r))
    return buf.getvalue().encode()


def plot_png(best: Sequence[ConfigResult], title_note: str = "") -> bytes:
    """Figure 4's form: test ranking accuracy of the best configuration per hidden size,
    pairwise and pointwise bars side by side, 95% intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hiddens = sorted({r.hidden for r in best})
    fig, ax = plt.subplots(figsize=(6, 4.3))
    width = 0.38

    def pct(v: float, fallback: float) -> float:
        return 100 * (fallback if math.isnan(v) else v)

    for k, loss in enumerate(LOSSES):
        pts = {r.hidden: r for r in best if r.loss == loss}
        xs = [i + (k - 0.5) * width for i, h in enumerate(hiddens) if h in pts]
        rs = [pts[h] for h in hiddens if h in pts]
        means = [100 * r.accuracy for r in rs]
        lows = [pct(r.accuracy_low, r.accuracy) for r in rs]
        highs = [pct(r.accuracy_high, r.accuracy) for r in rs]
        err = [
            [m - lo for m, lo in zip(means, lows, strict=True)],
            [hi - m for m, hi in zip(means, highs, strict=True)],
        ]
        ax.bar(xs, means, width, yerr=err, capsize=4, label=loss)
        for x, m, hi in zip(xs, means, highs, strict=True):
            ax.text(x, hi + 0.3, f"{m:.2f}", ha="center", va="bottom", fontsize=8)
    # The chosen (lr, β) of each bar under its hidden size.
    ticks = []
    for h in hiddens:
        chosen = {r.loss: r for r in best if r.hidden == h}
        ticks.append(
            f"hidden size {h}\n"
            + "\n".join(
                f"{loss}: lr {chosen[loss].lr:g}, β {chosen[loss].beta:g}"
                for loss in LOSSES
                if loss in chosen
            )
        )
    ax.set_xticks(range(len(hiddens)), ticks, fontsize=8)
    low = min(pct(r.accuracy_low, r.accuracy) for r in best)
    ax.set_ylim(max(0.0, 5 * math.floor((low - 2) / 5)), 102)
    ax.set_ylabel("test ranking accuracy, % (r_w > r_l)")
    ax.set_title("Pairwise vs pointwise ranking, toy example" + title_note, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_report(rows: Sequence[ConfigResult], out: Path, header: str = "") -> dict[str, Path]:
    """toy.md (best table + full grid), toy_grid.csv, toy_best.csv and toy.png under out,
    each written atomically; returns their paths."""
    if not rows:
        raise ValueError("no toy results to report")
    best = best_configs(rows)
    out = Path(out)
    paths = {
        "markdown": out / "toy.md",
        "grid_csv": out / "toy_grid.csv",
        "best_csv": out / "toy_best.csv",
        "plot": out / "toy.png",
    }
    runs = sorted({r.runs for r in rows})
    markdown = (
        "# Toy example (paper Appendix H, Figure 4)\n\n"
        + (header + "\n\n" if header else "")
        + "Best configuration per (loss, hidden size), by mean test accuracy over runs:\n\n"
        + best_table(best)
        + "\n\nMean test accuracy % of every configuration "
        + f"({', '.join(map(str, runs))} runs each):\n\n"
        + grid_table(rows)
        + "\n"
    )
    storage.write_bytes(paths["markdown"], markdown.encode())
    storage.write_bytes(paths["grid_csv"], _csv_bytes(rows))
    storage.write_bytes(paths["best_csv"], _csv_bytes(best))
    storage.write_bytes(paths["plot"], plot_png(best, f" ({runs[-1]} runs per config)"))
    return paths

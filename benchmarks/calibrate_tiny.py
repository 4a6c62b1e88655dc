"""Calibrate the tiny scenario fast: a plain-PyTorch replica of raydaa's two stages.

Same data preparation, objectives (raydaa.train.objectives), optimizer settings (AdamW, betas
(0.9, 0.95), no weight decay, grad clip 2), lr schedule (raydaa.train lr_factor) and
evaluation (raydaa.evaluate.policy.evaluate_policy) as `raydaa sft` / `raydaa align`, but
in one process without Ray or DeepSpeed, so one alignment config costs ~15-50 s on a core.
It measured the numbers behind tiny's recipe (README, "Tiny scenario results"):

    python benchmarks/calibrate_tiny.py sft OUT_DIR --epochs 8 --lr 1e-3 --batch 32
    python benchmarks/calibrate_tiny.py align OUT_DIR WORK_DIR dpo,5,1e-4,2,paper ...

(align specs: method,beta,lr,epochs,normalization). `--writers JSON` overrides the tiny
data writers (raydaa.scenarios.tiny SFT_WRITER / PAIR_WRITER) to try other data.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from torch.utils.data import DataLoader

import raydaa.scenarios.tiny as tiny_data
from raydaa.config.scenario import load_scenario
from raydaa.data.collators import PreferenceCollator, SFTCollator
from raydaa.data.tokenize import load_tokenizer
from raydaa.evaluate.policy import evaluate_policy
from raydaa.io.models import pretrained_model
from raydaa.losses import LossConfig
from raydaa.train.deepspeed_config import lr_factor
from raydaa.train.objectives import PreferenceObjective, SFTObjective
from raydaa.train.refcache import ensure_reference_cache
from raydaa.train.stages import base_model, prepare


def train(model, objective, dataset, collate, *, lr, epochs, batch, seed=0):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    loader = DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
    )
    total = epochs * len(loader)
    warmup, step = max(1, int(0.03 * total)), 0
    for _ in range(epochs):
        for b in loader:
            for group in opt.param_groups:
                group["lr"] = lr * lr_factor(step, total_steps=total, warmup_steps=warmup)
            loss, metrics = objective(model, b)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
            opt.step()
            step += 1
    return total, loss.item(), metrics


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=["sft", "align"])
    p.add_argument("out")
    p.add_argument("rest", nargs="*")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--writers", default=None, help="JSON: tiny.py module constants to override")
    args = p.parse_args()
    torch.set_num_threads(1)
    for key, value in json.loads(args.writers or "{}").items():
        setattr(tiny_data, key, value)
    scenario = load_scenario("tiny")
    tokenizer = load_tokenizer(scenario)
    start = time.time()
    if args.stage == "sft":
        torch.manual_seed(0)
        model = base_model(scenario).train()
        prepared = prepare(scenario, "sft", tokenizer)
        steps, loss, _ = train(
            model,
            SFTObjective(),
            prepared.dataset,
            SFTCollator(tokenizer.pad_token_id),
            lr=args.lr,
            epochs=args.epochs,
            batch=args.batch,
        )
        model.save_pretrained(args.out)
        tokenizer.save_pretrained(args.out)
        print(
            f"SFT {args.out}: {steps} steps, final NLL/token {loss:.3f}, {time.time() - start:.0f} s"
        )
        return
    work, specs = args.rest[0], args.rest[1:]
    prepared = prepare(scenario, "preference", tokenizer)
    cache = ensure_reference_cache(
        args.out, prepared, work, pad_token_id=tokenizer.pad_token_id, num_workers=1
    )
    for spec in specs:
        method, beta, lr, epochs, norm = spec.split(",")
        start = time.time()
        objective = PreferenceObjective(
            LossConfig(method, float(beta), normalization=norm),
            reference_cache=cache,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(0)
        model = pretrained_model(args.out, dtype=torch.float32).train()
        steps, loss, m = train(
            model,
            objective,
            prepared.dataset,
            PreferenceCollator(tokenizer.pad_token_id),
            lr=float(lr),
            epochs=int(epochs),
            batch=scenario.align.global_batch_size,
        )
        policy = tempfile.mkdtemp(prefix="calibrate-policy-")
        model.save_pretrained(policy)
        ev = evaluate_policy(policy, args.out, scenario)
        print(
            f"{spec}: {steps} steps, loss {loss:.3f}, train reward accuracy "
            f"{m['rewards/accuracy']:.2f}, win rate vs SFT {ev['quality']:.3f} "
            f"[{ev['quality_low']:.3f}, {ev['quality_high']:.3f}], KL {ev['kl']:.2f}, "
            f"{time.time() - start:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""Reward-model judge: a local AutoModelForSequenceClassification checkpoint with one
output scores the candidate and the baseline answer; the higher score wins, equal ties.

Each answer is scored in the conversation the policy saw: with the tokenizer's chat
template when it has one (prompt as the user turn, the answer as the assistant turn),
else as the plain prompt followed by the answer. Texts are not truncated: a reward model
needs the whole answer, and one too long for it fails loudly instead of being cut.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class RewardModelJudge:
    name = "reward_model"

    def __init__(self, path: str, *, batch_size: int = 8, device: str | None = None) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from raydaa.io import storage
        from raydaa.scenarios.assets import builtin_judge_model

        # a built-in one by name (rehearsal:reward_model): this node's saved copy; an
        # s3:// / gs:// checkpoint: this node's copy
        path = builtin_judge_model(path) or storage.local_copy(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype="auto")
        self.model.to(device).eval()
        if self.model.config.num_labels != 1:
            raise ValueError(
                f"{path}: a reward model has one output (num_labels=1), "
                f"this checkpoint has {self.model.config.num_labels}"
            )
        self.batch_size = batch_size
        # HF scores each row at its rightmost token that is not pad_token_id. A checkpoint's
        # own pad id is what it was trained with; without one, a dedicated pad token of the
        # tokenizer serves, but EOS as pad (Llama ships no pad) would skip every row's final
        # EOS and read the score one token early, so then each row is scored alone, unpadded.
        own_pad = self.tokenizer.pad_token_id
        if self.model.config.pad_token_id is None:
            specials = (self.tokenizer.eos_token_id, self.tokenizer.bos_token_id)
            if own_pad is not None and own_pad not in specials:
                self.model.config.pad_token_id = own_pad
            else:
                self.batch_size = 1
        self.stats: dict[str, float] = {}

    @classmethod
    def from_config(cls, config) -> RewardModelJudge:
        return cls(config.model)

    def token_ids(self, prompt, answer: str) -> list[int]:
        """The scored sequence: chat template when the tokenizer has one, else plain text."""
        if self.tokenizer.chat_template:
            turns = (
                [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            )
            messages = turns + [{"role": "assistant", "content": answer}]
            return list(
                self.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
            )
        if not isinstance(prompt, str):  # messages, for a reward model without a template
            prompt = "\n".join(turn["content"] for turn in prompt)
        separator = "" if prompt.endswith((" ", "\n")) else " "
        return self.tokenizer(prompt + separator + answer)["input_ids"]

    @torch.no_grad()
    def scores(self, prompts: Sequence, answers: Sequence[str]) -> torch.Tensor:
        """(N,) float32 reward of each answer, in right-padded batches."""
        rows = [self.token_ids(p, a) for p, a in zip(prompts, answers, strict=True)]
        pad, out = self.model.config.pad_token_id, []  # None only with batch_size 1: no padding
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            width = max(map(len, chunk))
            ids = torch.tensor([r + [pad or 0] * (width - len(r)) for r in chunk])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in chunk])
            device = self.model.device
            logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            out.append(logits[:, 0].float().cpu())
        return torch.cat(out) if out else torch.empty(0)

    def compare(
        self, prompts: Sequence, candidates: Sequence[str], baselines: Sequence[str]
    ) -> list[float]:
        candidate, baseline = self.scores(prompts, candidates), self.scores(prompts, baselines)
        self.stats = {"judge_mean_reward_margin": float((candidate - baseline).mean())}
        # The same answer ties with itself exactly: batched scores of one text padded to
        # different widths can differ in their last bits.
        return [
            0.5 if same else 1.0 if c > b else 0.0 if c < b else 0.5
            for c, b, same in zip(
                candidate.tolist(),
                baseline.tolist(),
                [c == b for c, b in zip(candidates, baselines, strict=True)],
                strict=True,
            )
        ]

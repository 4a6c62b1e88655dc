"""The reward-model judge on a tiny random-init LlamaForSequenceClassification."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from raydaa.config.evaluation import JudgeConfig
from raydaa.evaluate.judges import build_judge
from raydaa.evaluate.rm_judge import RewardModelJudge
from raydaa.scenarios import build_tiny_tokenizer

PROMPTS = ["sort 3 1 2", "reverse 1 2 3", "increment 1 9", "sort 5 4", "reverse 7 8"]
CANDIDATES = ["1 2 3", "3 2 1", "2 1 0 0 0", "4 5", "8 7"]
BASELINES = ["1 3 2", "3 2", "2 0", "4 5", "7 8 7 8"]  # row 3: the same answer -> a tie


def save_reward_model(path, tokenizer, num_labels=1):
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
        num_labels=num_labels, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)


@torch.no_grad()
def score_alone(path, tokenizer, prompt, answer, chat: bool) -> float:
    """One unpadded sequence through the saved model, tokenized here, not by the judge."""
    model = LlamaForSequenceClassification.from_pretrained(path).eval()
    if chat:
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    else:
        ids = tokenizer(f"{prompt} {answer}")["input_ids"]
    return model(input_ids=torch.tensor([list(ids)])).logits[0, 0].item()


@pytest.mark.parametrize("chat", [True, False], ids=["chat_template", "plain_text"])
def test_outcome_is_the_comparison_of_the_models_own_scores(tmp_path, chat):
    """Batched, right-padded scoring (batch 2, mixed lengths) gives the outcomes of
    comparing each answer's own unpadded score: higher wins, equal ties."""
    tokenizer = build_tiny_tokenizer()
    if not chat:
        tokenizer.chat_template = None
    save_reward_model(tmp_path, tokenizer)
    judge = build_judge(JudgeConfig(type="reward_model", model=str(tmp_path), baseline="chosen"))
    assert isinstance(judge, RewardModelJudge)
    judge.batch_size = 2
    outcomes = judge.compare(PROMPTS, CANDIDATES, BASELINES)

    expected = []
    for p, c, b in zip(PROMPTS, CANDIDATES, BASELINES, strict=True):
        sc, sb = (
            score_alone(tmp_path, tokenizer, p, c, chat),
            score_alone(tmp_path, tokenizer, p, b, chat),
        )
        expected.append(1.0 if sc > sb else 0.0 if sc < sb else 0.5)
    assert outcomes == expected
    assert outcomes[3] == 0.5 and {0.0, 1.0} <= set(outcomes)  # the data exercise all three
    alone = score_alone(tmp_path, tokenizer, PROMPTS[2], CANDIDATES[2], chat)
    assert judge.scores(PROMPTS, CANDIDATES)[2].item() == pytest.approx(alone, abs=1e-5)


def test_a_classifier_with_several_labels_is_refused(tmp_path):
    save_reward_model(tmp_path, build_tiny_tokenizer(), num_labels=2)
    with pytest.raises(ValueError, match="num_labels=1"):
        RewardModelJudge(str(tmp_path))

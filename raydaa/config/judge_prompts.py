"""Prompt templates of the pairwise LLM judge, by the name `judge.prompt_template` gives.

`tldr_side_by_side` is the paper's Appendix I prompt, word for word, as the system message.
Two things the paper's text does not settle, and what we chose:
  - where the post and the two summaries go: the paper prints only the instructions, so
    they follow in the user message, between start/end markers (MT-Bench's layout);
  - the format block: the paper's text shows it between triple quotes, broken by a page
    header ("The Differences Between Direct Alignment Algorithms are a Blur") and a
    closing quote pair; we keep the triple quotes on both sides and drop the page header.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SideBySideTemplate:
    system: str
    user: str
    """Format string with {text}, {answer_a}, {answer_b}."""

    def messages(self, text: str, answer_a: str, answer_b: str) -> list[dict[str, str]]:
        user = self.user.format(text=text, answer_a=answer_a, answer_b=answer_b)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]


TLDR_SIDE_BY_SIDE = SideBySideTemplate(
    system=(
        "Act as an impartial judge and evaluate the quality of the summaries provided by two "
        "AI assistants for the text displayed below. Your evaluation should consider accuracy, "
        "completeness, relevance, and conciseness.\n"
        "\n"
        "You will be given a text, Assistant A's summary, and Assistant B's summary. Your job "
        "is to evaluate which assistant's summary is better based on the text provided.\n"
        "\n"
        "Begin your evaluation by comparing both assistants' summaries with the original text. "
        "Identify and correct any inaccuracies. Ensure the summaries are complete, capturing "
        "all essential information from the text without introducing fabricated details. "
        "Assess the relevance of the information each assistant chose to include in their "
        "summary, ensuring it reflects the core message of the text. Evaluate the conciseness "
        "of the summaries, favoring those that efficiently convey the necessary information "
        "without unnecessary verbosity. Avoid any position biases and ensure the order in which "
        "the summaries were presented does not influence your decision. Do not allow the length "
        "of the summaries to influence your evaluation, except in the context of conciseness "
        "and efficiency. Do not favor certain names of the assistants. Be as objective as "
        "possible. You should only evaluate the summaries provided by both assistants and NOT "
        "the original text itself. If both summaries are irrelevant, contain hallucinations, or "
        "are inconsistent with the original text, mark the comparison as inconclusive and "
        'choose option "C".\n'
        "\n"
        "After providing your explanation, output your final verdict by strictly following "
        "this format:\n"
        "\n"
        '"""\n'
        "Comparison: <One-sentence comparison>\n"
        "\n"
        "Winner: <A if assistant A is better, B if assistant B is better, and C for a tie.>\n"
        '"""'
    ),
    user=(
        "[Text]\n{text}\n\n"
        "[The Start of Assistant A's Summary]\n{answer_a}\n[The End of Assistant A's Summary]\n\n"
        "[The Start of Assistant B's Summary]\n{answer_b}\n[The End of Assistant B's Summary]"
    ),
)

TEMPLATES = {"tldr_side_by_side": TLDR_SIDE_BY_SIDE}


def get_template(name: str) -> SideBySideTemplate:
    if name not in TEMPLATES:
        raise ValueError(f"judge.prompt_template: unknown {name!r}; valid: {sorted(TEMPLATES)}")
    return TEMPLATES[name]

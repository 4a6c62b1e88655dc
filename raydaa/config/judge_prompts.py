"""Prompt templates of the pairwise LLM judge, by the name `judge.prompt_template` gives,
or read from a YAML file of the user's own (keys `system` and `user`).

`tldr_side_by_side` is the paper's Appendix I prompt, word for word, as the system message.
Two things the paper's text does not settle, and what we chose:
  - where the post and the two summaries go: the paper prints only the instructions, so
    they follow in the user message, between start/end markers (MT-Bench's layout);
  - the format block: the paper's text shows it between triple quotes, broken by a page
    header ("The Differences Between Direct Alignment Algorithms are a Blur") and a
    closing quote pair; we keep the triple quotes on both sides and drop the page header.

`chat_side_by_side` is ours, for general chat data (UltraFeedback-like: which assistant
reply is more helpful, accurate and harmless). It follows the spirit of MT-Bench's pairwise
judge prompt (Zheng et al. 2023, "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena",
its `pair-v2` prompt): an impartial judge, a short explanation first, no position, length or
name bias, ties allowed. The words are our own; the layout of the question and the two
answers between start/end markers is MT-Bench's; the verdict block is the TL;DR prompt's, so
one parser (`Winner: A|B|C`) reads both.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import yaml

PLACEHOLDERS = ("text", "answer_a", "answer_b")
"""What the user message is filled with: the prompt (a conversation as role-tagged turns),
then the answer shown as assistant A and the one shown as assistant B."""
TEMPLATE_KEYS = ("system", "user")
"""The keys of a template file."""
TEMPLATE_SUFFIXES = (".yaml", ".yml")
"""A `prompt_template` ending in one of these is a file; anything else is a built-in name."""


@dataclass(frozen=True)
class SideBySideTemplate:
    system: str
    """The system message, sent as is (no placeholders)."""
    user: str
    """Format string with {text}, {answer_a}, {answer_b}."""

    def messages(self, text: str, answer_a: str, answer_b: str) -> list[dict[str, str]]:
        """The chat messages of one question: the system message, then the filled user one."""
        user = self.user.format(text=text, answer_a=answer_a, answer_b=answer_b)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]


VERDICT_FORMAT = (
    "After providing your explanation, output your final verdict by strictly following "
    "this format:\n"
    "\n"
    '"""\n'
    "Comparison: <One-sentence comparison>\n"
    "\n"
    "Winner: <A if assistant A is better, B if assistant B is better, and C for a tie.>\n"
    '"""'
)
"""The paper's verdict block (Appendix I), shared by both built-in prompts."""

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
        "\n" + VERDICT_FORMAT
    ),
    user=(
        "[Text]\n{text}\n\n"
        "[The Start of Assistant A's Summary]\n{answer_a}\n[The End of Assistant A's Summary]\n\n"
        "[The Start of Assistant B's Summary]\n{answer_b}\n[The End of Assistant B's Summary]"
    ),
)

CHAT_SIDE_BY_SIDE = SideBySideTemplate(
    system=(
        "You are an impartial judge. Below is a conversation between a user and an AI "
        "assistant, followed by two candidate replies to its last user turn, written by "
        "Assistant A and Assistant B. Decide which reply serves the user better.\n"
        "\n"
        "Weigh three things. Helpfulness: the reply does what the user asked, fully and to the "
        "point, and follows the user's instructions. Accuracy: its facts, reasoning, code and "
        "figures are correct, and it invents nothing. Harmlessness: it does not help with what "
        "would cause harm, and it does not refuse or lecture where the request is safe. A "
        "mistake in accuracy or harm outweighs a difference in style.\n"
        "\n"
        "Read the whole conversation first, so that each reply is judged in its context. Then "
        "compare the two replies with each other and with what a careful expert would answer, "
        "and point out their mistakes. Neither the order in which the replies appear nor the "
        "assistants' names may sway you. Length is no merit in itself: a longer reply wins "
        "only when its extra content is something the user needs. Judge the two replies only, "
        "not the conversation. If they are equally good, or equally poor, the comparison is a "
        'tie: choose option "C".\n'
        "\n" + VERDICT_FORMAT
    ),
    user=(
        "[Conversation]\n{text}\n\n"
        "[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n"
        "[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
    ),
)

TEMPLATES = {"tldr_side_by_side": TLDR_SIDE_BY_SIDE, "chat_side_by_side": CHAT_SIDE_BY_SIDE}


def is_template_file(name_or_path: str) -> bool:
    """Whether `judge.prompt_template` names a YAML file rather than a built-in prompt."""
    return str(name_or_path).endswith(TEMPLATE_SUFFIXES)


def resolve_template_path(name_or_path: str, folder: str | Path) -> str:
    """A built-in name unchanged; a relative template file joined onto `folder` (the folder
    of the scenario YAML that names it); an absolute one (or `~/...`) as it is."""
    if not isinstance(name_or_path, str) or not is_template_file(name_or_path):
        return name_or_path
    path = Path(name_or_path).expanduser()
    return str(path if path.is_absolute() else Path(folder) / path)


def get_template(name_or_path: str) -> SideBySideTemplate:
    """The built-in template of that name, or the one a template file holds (a relative
    path is taken from the current directory; scenarios resolve theirs first)."""
    if isinstance(name_or_path, str) and is_template_file(name_or_path):
        return load_template_file(name_or_path)
    if name_or_path not in TEMPLATES:
        raise ValueError(
            f"judge.prompt_template: unknown {name_or_path!r}; valid: {sorted(TEMPLATES)}, "
            f"or a path to a YAML file ({'/'.join(TEMPLATE_SUFFIXES)}) with keys "
            f"{' and '.join(TEMPLATE_KEYS)}"
        )
    return TEMPLATES[name_or_path]


def load_template_file(path: str | Path) -> SideBySideTemplate:
    """A template from a YAML file with string keys `system` and `user` (user with {text},
    {answer_a}, {answer_b}); every problem is a ValueError naming the file and the key."""
    path = Path(path).expanduser()
    where = f"judge.prompt_template {path}"
    if not path.is_file():
        raise ValueError(
            f"{where}: no such file (expected a YAML file with keys "
            f"{' and '.join(TEMPLATE_KEYS)}, or a built-in name: {sorted(TEMPLATES)})"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{where}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{where}: expected a mapping with keys {list(TEMPLATE_KEYS)}, "
            f"got {type(data).__name__}"
        )
    missing = [k for k in TEMPLATE_KEYS if k not in data]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}; expected keys {list(TEMPLATE_KEYS)}")
    unknown = sorted(set(data) - set(TEMPLATE_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected keys {list(TEMPLATE_KEYS)}")
    for key in TEMPLATE_KEYS:
        if not isinstance(data[key], str) or not data[key].strip():
            raise ValueError(f"{where}: key {key!r} must be non-empty text, got {data[key]!r}")
    check_placeholders(data["user"], f"{where}: key 'user'")
    stray = [f"{{{p}}}" for p in PLACEHOLDERS if f"{{{p}}}" in data["system"]]
    if stray:
        raise ValueError(
            f"{where}: key 'system' has {stray}: the system message is sent as is, "
            "the placeholders are filled in key 'user' only"
        )
    return SideBySideTemplate(system=data["system"], user=data["user"])


def check_placeholders(user: str, where: str) -> None:
    """`user` must name each of {text}, {answer_a}, {answer_b} and nothing else."""
    hint = "write a literal brace as {{ or }}"
    try:
        # str.format's own parser, so that what passes here formats without error
        names = {name for _, name, _, _ in string.Formatter().parse(user) if name is not None}
    except ValueError as err:
        raise ValueError(f"{where}: not a valid format string ({err}); {hint}") from None
    expected = ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
    missing = [f"{{{p}}}" for p in PLACEHOLDERS if p not in names]
    if missing:
        raise ValueError(f"{where}: placeholder(s) {missing} missing; it needs {expected}")
    unknown = sorted(f"{{{n}}}" for n in names - set(PLACEHOLDERS))
    if unknown:
        raise ValueError(
            f"{where}: unknown placeholder(s) {unknown}; only {expected} are filled ({hint})"
        )

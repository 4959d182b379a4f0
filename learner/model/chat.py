"""Conversations as the model sees them: the tokenizer's chat template, in one place.

``/v1/chat/completions`` renders a conversation with :func:`render_prompt` and the model
continues the text; a chat example is stored as the same rendering of its turns before the
last (the prompt) and the last, assistant turn's content (the target), so that training,
probes and serving see the same tokens. The loss falls on the target and the EOS after it
(:func:`learner.model.loading.tokenize_examples`): the model learns to end its turn where
generation stops.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

ROLES = ("system", "user", "assistant")

#: The builtin models' template: turns follow each other as plain text (a system turn on a
#: line of its own), an assistant turn ends with EOS, and the generation prompt adds nothing,
#: so that a one-turn conversation is exactly the prompt the builtin families use.
BUILTIN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}"
    "{% else %}{{ message['content'] }}{% endif %}"
    "{% endfor %}"
)


class ChatTemplateError(ValueError):
    """The conversation cannot be rendered: no chat template, or the template refused it."""


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> str:
    """The text the model continues for ``messages``: the chat template with the generation
    prompt (the assistant's turn opened). Raises :class:`ChatTemplateError`."""
    if not has_chat_template(tokenizer):
        raise ChatTemplateError("the model's tokenizer has no chat template")
    turns = [{"role": m["role"], "content": m["content"]} for m in messages]
    try:
        return str(tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True))
    except Exception as exc:  # jinja2 TemplateError and friends: the messages' fault
        raise ChatTemplateError(f"messages do not fit the model's chat template: {exc}") from exc


def check_conversation(messages: Sequence[Mapping[str, str]]) -> str | None:
    """What is wrong with a chat example's turns (None when nothing): known roles, and a
    last turn from the assistant (the target) after at least one user turn."""
    if len(messages) < 2:
        return "a chat example needs at least two turns: a user turn and the assistant's answer"
    roles = [m["role"] for m in messages]
    if unknown := sorted(set(roles) - set(ROLES)):
        return f"unknown role(s) {unknown}; expected {list(ROLES)}"
    if roles[-1] != "assistant":
        return f"the last turn is the target and must be the assistant's, not {roles[-1]!r}"
    if "user" not in roles[:-1]:
        return "a chat example needs a user turn before the assistant's answer"
    if not messages[-1]["content"].strip():
        return "the assistant's answer (the last turn) must not be empty"
    return None


def canonical_messages(messages: Sequence[Mapping[str, str]]) -> str:
    """One text per conversation (roles and contents, in order, nothing else): what a chat
    example's content hash covers and what is stored."""
    turns = [[m["role"], m["content"]] for m in messages]
    return json.dumps(turns, ensure_ascii=False, separators=(",", ":"))


def parse_messages(canonical: str) -> list[dict[str, str]]:
    """:func:`canonical_messages` back into ``[{"role", "content"}, ...]``."""
    return [{"role": role, "content": content} for role, content in json.loads(canonical)]


def chat_example(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> tuple[str, str]:
    """(prompt, target) of a chat example: the rendered turns before the last, and the last
    turn's content."""
    return render_prompt(tokenizer, messages[:-1]), messages[-1]["content"]

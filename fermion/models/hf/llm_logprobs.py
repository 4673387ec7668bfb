"""Log probabilities in OpenAI's shapes: chat's `logprobs.content` and the legacy completions' `logprobs`.

The engine records, per generated token, its log probability under the model's own distribution
(before logit bias, penalties, temperature and top-p) and the likeliest alternatives (a
`TokenLogprob`); this module makes those and turns their token ids into the texts and bytes clients see.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, Field

Decode = Callable[[Sequence[int]], str]

#: The most alternatives OpenAI's APIs return per token (chat's `top_logprobs`, completions' `logprobs`).
MAX_CHAT_ALTERNATIVES, MAX_COMPLETION_ALTERNATIVES = 20, 5
TopLogprobs = Annotated[
    int | None,
    Field(
        ge=0,
        le=MAX_CHAT_ALTERNATIVES,
        description="With logprobs: how many of the likeliest tokens to list at each position (0 to 20).",
    ),
]
CompletionLogprobCount = Annotated[
    int | None,
    Field(
        ge=0,
        le=MAX_COMPLETION_ALTERNATIVES,
        description="Log probabilities of the generated tokens and of this many likeliest alternatives (0 to 5).",
    ),
]


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token, its log probability under the model, and the likeliest tokens there (id, log probability)."""

    token: int
    logprob: float
    top: list[tuple[int, float]]


def token_logprob(torch: Any, token: int, distribution: Any, alternatives: int) -> TokenLogprob:
    """`token`'s entry from a position's log-softmax `distribution`, with the `alternatives` likeliest tokens."""
    top: list[tuple[int, float]] = []
    count = min(alternatives, int(distribution.shape[-1]))
    if count:
        values, ids = torch.topk(distribution, count)
        top = list(zip(ids.tolist(), values.tolist(), strict=True))
    return TokenLogprob(token, float(distribution[token]), top)


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    """The generated tokens with their log probabilities (natural log, ≤ 0) and the likeliest alternatives."""

    content: list[ChatTokenLogprob] | None


class CompletionLogprobs(BaseModel):
    """The legacy completions' form: parallel lists, one entry per generated token."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


def _top(decode: Decode, token: int, logprob: float) -> TopLogprob:
    text = decode([token])
    return TopLogprob(token=text, logprob=logprob, bytes=list(text.encode("utf-8")))


def chat_logprobs(decode: Decode, entries: Sequence[TokenLogprob]) -> ChatLogprobs:
    """Chat's `logprobs` for these tokens."""
    content = []
    for entry in entries:
        chosen = _top(decode, entry.token, entry.logprob)
        alternatives = [_top(decode, token, logprob) for token, logprob in entry.top]
        content.append(ChatTokenLogprob(**chosen.model_dump(), top_logprobs=alternatives))
    return ChatLogprobs(content=content)


def completion_logprobs(decode: Decode, entries: Sequence[TokenLogprob], offset: int = 0) -> CompletionLogprobs:
    """The legacy completions' `logprobs` for these tokens, their text offsets counted from `offset`."""
    tokens, offsets = [], []
    for entry in entries:
        offsets.append(offset)
        tokens.append(decode([entry.token]))
        offset += len(tokens[-1])
    tops = [{decode([token]): logprob for token, logprob in entry.top} for entry in entries]
    return CompletionLogprobs(tokens=tokens, token_logprobs=[e.logprob for e in entries], top_logprobs=tops, text_offset=offsets)

"""Wire types of the text-generation Service: the native answer and the OpenAI-compatible shapes,
and the checks that turn OpenAI requests into what the engine reads (or a 422 that says why).

Request-side models ignore fields they do not know (OpenAI clients add new ones over time);
the top-level request fields are the endpoints' parameters, declared in `fermion.models.hf.llm`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fermion.models.hf.llm_logprobs import ChatLogprobs, CompletionLogprobs
from fermion.responses import InvalidInput

FinishReason = Literal["stop", "length"]

_LENIENT = ConfigDict(extra="ignore")

# -- shared request fields -------------------------------------------------------------------

Temperature = Annotated[
    float | None,
    Field(
        ge=0,
        le=2,
        description="Sampling temperature: 0 always picks the likeliest token; higher is more varied. "
        "Default: the model's own setting, else 1.",
        examples=[0.7],
    ),
]
TopP = Annotated[
    float | None,
    Field(
        gt=0,
        le=1,
        description="Nucleus sampling: sample only from the likeliest tokens whose probabilities add up to "
        "top_p. Default: the model's own setting, else 1.",
        examples=[0.95],
    ),
]
Stop = Annotated[
    str | list[str] | None,
    Field(
        description="Text (or texts) where generation stops; the stop text is not included in the answer.", examples=[["\n\n"]]
    ),
]
Seed = Annotated[
    int | None, Field(description="Makes sampling repeatable: the same seed and request give the same text.", examples=[42])
]
Penalty = Annotated[float, Field(ge=-2, le=2, description="OpenAI-style penalty on tokens already generated (-2 to 2).")]


class StreamOptions(BaseModel):
    """OpenAI's `stream_options`."""

    model_config = _LENIENT

    include_usage: bool = Field(False, description="Send a last chunk with the token usage (and `choices: []`).")


class TextPart(BaseModel):
    """One part of a message's content; only `{"type": "text", "text": ...}` parts are served."""

    model_config = _LENIENT

    type: str = Field(description="Only `text` is supported by text-only models.", examples=["text"])
    text: str | None = None


class ChatMessage(BaseModel):
    """One chat message, as OpenAI clients send it (unknown fields, like `name`, are ignored)."""

    model_config = _LENIENT

    role: Literal["system", "developer", "user", "assistant", "tool"] = Field(examples=["user"])
    content: str | list[TextPart] | None = Field(None, examples=["Write a haiku about the sea."])


class ResponseFormat(BaseModel):
    """OpenAI's `response_format`: only `{"type": "text"}` is served."""

    model_config = _LENIENT

    type: str = Field("text", examples=["text"])


# -- answers ---------------------------------------------------------------------------------


class Usage(BaseModel):
    """Tokens read and written by one request."""

    prompt_tokens: int = Field(description="Tokens in the prompt (after the chat template, if any).")
    completion_tokens: int = Field(description="Tokens generated, including an end-of-text token.")
    total_tokens: int


class GenerateResult(BaseModel):
    """The native answer: the generated text, why it stopped and the token counts."""

    text: str = Field(examples=[" there was a small robot who loved the sea."])
    finish_reason: FinishReason = Field(description="`stop`: end of text or a stop sequence; `length`: the token limit.")
    usage: Usage


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason


class ChatCompletion(BaseModel):
    """OpenAI's `chat.completion` object; with `stream: true`, `chat.completion.chunk` events instead."""

    id: str = Field(examples=["chatcmpl-4f3c2a1b0e9d8c7b"])
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(description="Unix time, in seconds.")
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason


class Completion(BaseModel):
    """OpenAI's `text_completion` object; with `stream: true`, events of the same shape with text pieces."""

    id: str = Field(examples=["cmpl-4f3c2a1b0e9d8c7b"])
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(description="Unix time, in seconds.")
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ModelCard(BaseModel):
    """One served model, as `GET /v1/models` lists it."""

    id: str = Field(examples=["my-llm"])
    object: Literal["model"] = "model"
    created: int = Field(description="When this server loaded the model (Unix time).")
    owned_by: str = "fermion"


class ModelList(BaseModel):
    """OpenAI's model list: the one model this server serves."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


def usage_of(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """The `usage` object as a plain dict (for stream chunks)."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_messages(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """Messages as chat templates expect them: `{"role", "content"}` with text content."""
    out = []
    for index, message in enumerate(messages):
        content = message.content
        if isinstance(content, list):
            other = [part.type for part in content if part.type != "text"]
            if other:
                raise InvalidInput(f"messages[{index}] has a {other[0]!r} part; this text-only model reads only text parts")
            content = "\n".join(part.text or "" for part in content)
        role = "system" if message.role == "developer" else message.role  # OpenAI's newer name for system
        out.append({"role": role, "content": content or ""})
    return out


def refuse_unserved(
    *,
    n: int,
    stream: bool,
    tools: bool = False,
    response_format: ResponseFormat | None = None,
    best_of: int | None = None,
    suffix: str | None = None,
) -> None:
    """422 for OpenAI options this server cannot honour, rather than an answer that silently ignores them."""
    if n > 1 and stream:
        raise InvalidInput(
            f"n={n} with stream: several choices are served only without stream; send n=1 to stream, "
            "or leave out stream to get all choices at once"
        )
    if best_of not in (None, 1):
        raise InvalidInput(f"best_of={best_of}: only 1 is served")
    if tools:
        raise InvalidInput("tool calling is not served by this server; leave out tools")
    if response_format is not None and response_format.type != "text":
        raise InvalidInput(f"response_format {response_format.type!r} is not served; only plain text answers are")
    if suffix:
        raise InvalidInput("suffix is not served (it needs a fill-in-the-middle model); leave it out")

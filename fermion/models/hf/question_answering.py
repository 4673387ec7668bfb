"""`hf:` extractive question answering: the span of a context that answers a question.

transformers 5 dropped the question-answering pipeline, so this task runs the model directly:
long contexts are read in overlapping windows and the likeliest span of any window wins.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from fermion.models.hf._pipeline import MAX_CHARACTERS, ModelService, token_limit
from fermion.responses import InvalidInput
from fermion.service import endpoint

Question = Annotated[str, Field(min_length=1, description="The question.", examples=["Where does Marie work?"])]
Context = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_CHARACTERS,
        description="The text that holds the answer, up to 100,000 characters (read in overlapping windows).",
        examples=["Marie lives in Warsaw but works in Paris."],
    ),
]


class Answer(BaseModel):
    """The answer span found in the context."""

    answer: str = Field(description="The answer, copied from the context.", examples=["Paris"])
    score: float = Field(description="The model's probability for this span, from 0 to 1.", examples=[0.87])
    start: int = Field(description="Offset of the answer's first character in the context.", examples=[34])
    end: int = Field(description="Offset just past its last character (`context[start:end]` is the answer).", examples=[39])


class QuestionAnswering(ModelService):
    task = "question-answering"

    #: The longest answer considered, in tokens.
    max_answer_tokens = 30

    def setup(self) -> None:
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        if not self.tokenizer.is_fast:
            raise RuntimeError(
                f"{self.model_dir}: question-answering needs a fast tokenizer (a tokenizer.json in the model folder)"
            )
        self.model = AutoModelForQuestionAnswering.from_pretrained(self.model_dir).to(self.device).eval()
        self.limit = token_limit(self.tokenizer, self.model.config) or 512
        self.question_first = self.tokenizer.padding_side == "right"

    @endpoint(max_batch_size=16, max_wait_ms=5)
    def answer(self, question: list[Question], context: list[Context]) -> list[Answer]:
        """Answer a question from a context: the span of the context that answers it, with its score.

        Long contexts are read in overlapping windows. A question longer than half of what
        the model reads at once is refused (422), as the context would not fit beside it.
        """
        import torch

        for item in question:
            length = len(self.tokenizer(item)["input_ids"])
            if length > self.limit // 2:
                raise InvalidInput(
                    f"the question is too long: {length} tokens; this model reads {self.limit} at once, so keep questions under {self.limit // 2}"
                )
        pairs = (question, context) if self.question_first else (context, question)
        encoded = self.tokenizer(
            *pairs,
            truncation="only_second" if self.question_first else "only_first",
            max_length=self.limit,
            stride=self.limit // 4,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding=True,
            return_tensors="pt",
        )
        windows = encoded.pop("overflow_to_sample_mapping").tolist()
        offsets = encoded.pop("offset_mapping").tolist()
        with torch.inference_mode():
            output = self.model(**{key: value.to(self.device) for key, value in encoded.items()})
        start_logits, end_logits = output.start_logits.float().cpu(), output.end_logits.float().cpu()
        best: list[Answer | None] = [None] * len(question)
        context_id = 1 if self.question_first else 0
        for window, sample in enumerate(windows):
            tokens = [i for i, seq in enumerate(encoded.sequence_ids(window)) if seq == context_id]
            if not tokens:  # a context of nothing but whitespace
                continue
            span = self._best_span(start_logits[window], end_logits[window], tokens)
            start_char, end_char = offsets[window][span[0]][0], offsets[window][span[1]][1]
            found = Answer(answer=context[sample][start_char:end_char], score=span[2], start=start_char, end=end_char)
            if best[sample] is None or found.score > best[sample].score:  # type: ignore[union-attr]
                best[sample] = found
        return [a if a is not None else Answer(answer="", score=0.0, start=0, end=0) for a in best]

    def _best_span(self, start_logits: Any, end_logits: Any, tokens: list[int]) -> tuple[int, int, float]:
        """The (start, end, probability) of the likeliest span within `tokens` of one window."""
        import torch

        index = torch.tensor(tokens)
        starts = torch.softmax(start_logits[index], dim=0)
        ends = torch.softmax(end_logits[index], dim=0)
        scores = torch.triu(starts[:, None] * ends[None, :]).tril(self.max_answer_tokens - 1)
        flat = int(torch.argmax(scores))
        first, last = divmod(flat, len(tokens))
        return tokens[first], tokens[last], float(scores[first, last])

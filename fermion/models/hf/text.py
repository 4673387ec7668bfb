"""`hf:` text tasks: classification, entities, zero-shot, fill-mask, question answering, embeddings.

Each task is a Service with one typed, batched endpoint (zero-shot takes per-request labels, so it
is not batched). Question answering lives in `fermion.models.hf.question_answering`. Summarization, translation and text2text-generation live in `fermion.models.hf.seq2seq`.
Long inputs: see docs/models/hf.md.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from fermion.models.hf._pipeline import (
    MAX_CHARACTERS,
    LabelScore,
    ModelService,
    check_model_dir,
    describe_labels,
    for_model,
    load_pipeline,
    model_name,
    ranked,
    read_json,
    token_limit,
)
from fermion.models.hf.question_answering import QuestionAnswering
from fermion.models.kinds import SourceError
from fermion.responses import InvalidInput
from fermion.service import Service, endpoint

Text = Annotated[
    str,
    Field(
        min_length=1,
        description="The text. Text longer than the model reads is truncated.",
        examples=["I loved this film: the acting was superb."],
    ),
]
NerText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_CHARACTERS,
        description="The text, up to 100,000 characters (long texts are read in overlapping windows).",
        examples=["Marie Curie was born in Warsaw and worked in Paris."],
    ),
]
CandidateLabels = Annotated[
    list[Annotated[str, Field(min_length=1)]],
    Field(
        min_length=1,
        max_length=100,
        description="The labels to choose from (1 to 100, no repeats).",
        examples=[["sports", "politics", "music"]],
    ),
]
MultiLabel = Annotated[
    bool, Field(description="Score each label on its own (several may apply) instead of one label out of all.")
]
HypothesisTemplate = Annotated[
    str,
    Field(description="How a label is phrased for the model; `{}` is replaced by the label.", examples=["This example is {}."]),
]


class Entity(BaseModel):
    """A named entity found in the text."""

    word: str = Field(description="The entity as it appears in the text.", examples=["Marie Curie"])
    label: str = Field(description="Its type, from the model's labels without the B-/I- prefix.", examples=["PER"])
    score: float = Field(description="The model's mean probability over the entity's tokens, from 0 to 1.", examples=[0.98])
    start: int = Field(description="Offset of its first character in the text.", examples=[0])
    end: int = Field(description="Offset just past its last character (`text[start:end]` is the word).", examples=[11])


class MaskCandidate(BaseModel):
    """One way to fill the mask."""

    token: str = Field(description="The predicted token.", examples=["capital"])
    token_id: int = Field(description="Its id in the model's vocabulary.", examples=[3007])
    score: float = Field(description="The model's probability for it, from 0 to 1.", examples=[0.91])
    sequence: str = Field(description="The text with the mask filled in.", examples=["paris is the capital of france."])


class TextClassification(ModelService):
    task = "text-classification"

    def setup(self) -> None:
        self.pipe = load_pipeline(self.task, self.model_dir, self.device)
        token_limit(self.pipe.tokenizer, self.pipe.model.config)

    @endpoint(max_batch_size=32, max_wait_ms=5)
    def classify(self, text: list[Text]) -> list[list[LabelScore]]:
        """Classify a text: the model's labels with scores, best first (at most 5)."""
        results = self.pipe(text, top_k=None, truncation=True, batch_size=len(text))
        return [ranked(result) for result in results]


class TokenClassification(ModelService):
    task = "token-classification"

    def setup(self) -> None:
        self.pipe = load_pipeline(self.task, self.model_dir, self.device, aggregation_strategy="simple")
        if not self.pipe.tokenizer.is_fast:
            raise RuntimeError(
                f"{self.model_dir}: token-classification needs a fast tokenizer (a tokenizer.json in the model folder)"
            )
        limit = token_limit(self.pipe.tokenizer, self.pipe.model.config)
        self.stride = limit // 4 if limit else None

    @endpoint(max_batch_size=16, max_wait_ms=5)
    def entities(self, text: list[NerText]) -> list[list[Entity]]:
        """Find the named entities in a text: each with its label, score and character offsets."""
        results = self.pipe(text, stride=self.stride, batch_size=len(text))
        return [[_entity(source, found) for found in result] for source, result in zip(text, results, strict=True)]


def _entity(text: str, found: dict[str, Any]) -> Entity:
    start, end = found.get("start"), found.get("end")
    word = text[start:end] if start is not None and end is not None else str(found["word"])
    label = str(found.get("entity_group") or found.get("entity"))
    return Entity(word=word, label=label, score=float(found["score"]), start=start or 0, end=end or 0)


class ZeroShotClassification(ModelService):
    task = "zero-shot-classification"

    def setup(self) -> None:
        self.pipe = load_pipeline(self.task, self.model_dir, self.device)
        token_limit(self.pipe.tokenizer, self.pipe.model.config)

    @endpoint(max_concurrency=1)
    def classify(
        self,
        text: Text,
        candidate_labels: CandidateLabels,
        multi_label: MultiLabel = False,
        hypothesis_template: HypothesisTemplate = "This example is {}.",
    ) -> list[LabelScore]:
        """Score a text against labels you choose: every candidate label with its score, best first.

        With `multi_label` false the scores sum to 1 (one label out of all); with true each is
        from 0 to 1 on its own. Text longer than the model reads is truncated.
        """
        if len(set(candidate_labels)) != len(candidate_labels):
            raise InvalidInput("candidate_labels has repeats; list each label once")
        if "{}" not in hypothesis_template:
            raise InvalidInput(
                f"hypothesis_template {hypothesis_template!r} has no {{}} for the label; for example 'This text is about {{}}.'"
            )
        result = self.pipe(
            text, candidate_labels=candidate_labels, multi_label=multi_label, hypothesis_template=hypothesis_template
        )
        return ranked(
            ({"label": label, "score": score} for label, score in zip(result["labels"], result["scores"], strict=True)),
            len(candidate_labels),
        )


class FillMask(ModelService):
    task = "fill-mask"

    def setup(self) -> None:
        self.pipe = load_pipeline(self.task, self.model_dir, self.device)
        tokenizer = self.pipe.tokenizer
        self.mask = tokenizer.mask_token
        self.limit = token_limit(tokenizer, self.pipe.model.config)
        self.special_ids = set(tokenizer.all_special_ids)

    def _fill(self, text: list[str]) -> list[list[MaskCandidate]]:
        for item in text:
            count = item.count(self.mask)
            if count != 1:
                where = "has no" if count == 0 else f"has {count}"
                raise InvalidInput(
                    f"the text {where} mask token {self.mask}: put exactly one {self.mask} where the missing word goes, e.g. 'Paris is the {self.mask} of France.'"
                )
            if self.limit is not None:
                length = len(self.pipe.tokenizer(item)["input_ids"])
                if length > self.limit:
                    raise InvalidInput(
                        f"the text is too long: {length} tokens, and this model reads at most {self.limit}; shorten it around the {self.mask}"
                    )
        # Ask for more than five so that special tokens ([CLS], padding) can be dropped.
        results = self.pipe(text, top_k=5 + len(self.special_ids), batch_size=len(text))
        if len(text) == 1 and results and isinstance(results[0], dict):
            results = [results]
        return [
            [
                MaskCandidate(
                    token=str(c["token_str"]).strip(),
                    token_id=int(c["token"]),
                    score=float(c["score"]),
                    sequence=str(c["sequence"]),
                )
                for c in result
                if int(c["token"]) not in self.special_ids
            ][:5]
            for result in results
        ]


def _fill_mask_endpoint(mask: str) -> Any:
    """The fill-mask endpoint of one model: its example and description name that model's mask token."""

    def fill_mask(self: FillMask, text: list[str]) -> list[list[MaskCandidate]]:
        return self._fill(text)

    fill_mask.__doc__ = f"""Fill the {mask} in a text: the 5 likeliest tokens, best first, each with the completed text.

    The text must hold exactly one {mask} and fit in the model's limit (longer text → 422).
    """
    item = Annotated[
        str,
        Field(
            min_length=1,
            description=f"A text with one {mask} where a word is missing.",
            examples=[f"Paris is the {mask} of France."],
        ),
    ]
    fill_mask.__annotations__ = {"text": list[item], "return": list[list[MaskCandidate]]}
    return endpoint(max_batch_size=16, max_wait_ms=5)(fill_mask)


class FeatureExtraction(ModelService):
    task = "feature-extraction"

    def setup(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        model = AutoModel.from_pretrained(self.model_dir).to(self.device).eval()
        self.model = model.get_encoder() if getattr(model.config, "is_encoder_decoder", False) else model
        self.limit = token_limit(self.tokenizer, model.config)
        if self.tokenizer.pad_token is None:  # decoder-only models: padding is masked out anyway
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.embed(["hello"])  # fail at startup, not on the first request, if the model cannot embed

    @endpoint(max_batch_size=32, max_wait_ms=5)
    def embed(self, text: list[Text]) -> list[list[float]]:
        """Embed a text: the mean of its token vectors (not normalised), one number per hidden unit.

        Text longer than the model reads is truncated.
        """
        import torch

        batch = self.tokenizer(text, padding=True, truncation=self.limit is not None, max_length=self.limit, return_tensors="pt")
        batch = batch.to(self.device)
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return ((hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)).tolist()


def _mask_token(model_dir: str, source: str) -> str:
    """The tokenizer's mask token, read from its files (loading the tokenizer only when they do not say)."""
    for filename in ("tokenizer_config.json", "special_tokens_map.json"):
        token = read_json(model_dir, filename).get("mask_token")
        if isinstance(token, dict):
            token = token.get("content")
        if isinstance(token, str) and token:
            return token
    from transformers import AutoTokenizer

    token = AutoTokenizer.from_pretrained(model_dir).mask_token
    if not token:
        raise SourceError(
            f"{source}: its tokenizer has no mask token, so it cannot fill masks; pass the --task it was trained for"
        )
    return token


def build(model_dir: str, task: str, device: str | None = None) -> Service:
    """The Service for one text `task` of the model in `model_dir`, on `device` (default the CPU)."""
    source = f"hf:{model_dir}"
    check_model_dir(model_dir, source)
    name = model_name(model_dir)
    labels = describe_labels(model_dir)
    if task == "text-classification":
        return for_model(TextClassification, model_dir, f"Text classification with {name}. Labels: {labels}.", device=device)
    if task == "token-classification":
        return for_model(TokenClassification, model_dir, f"Named entities with {name}. Labels: {labels}.", device=device)
    if task == "zero-shot-classification":
        return for_model(
            ZeroShotClassification, model_dir, f"Zero-shot classification with {name}: you choose the labels.", device=device
        )
    if task == "fill-mask":
        mask = _mask_token(model_dir, source)
        return for_model(
            FillMask,
            model_dir,
            f"Fill-mask with {name}: mark the missing word with {mask}.",
            {"fill_mask": _fill_mask_endpoint(mask)},
            device=device,
        )
    if task == "question-answering":
        return for_model(
            QuestionAnswering,
            model_dir,
            f"Extractive question answering with {name}: answers are spans of the context.",
            device=device,
        )
    if task in ("summarization", "translation", "text2text-generation"):
        from fermion.models.hf import seq2seq

        return seq2seq.build(model_dir, task, device)
    if task == "feature-extraction":
        return for_model(
            FeatureExtraction, model_dir, f"Text embeddings with {name}: the mean of the last hidden states.", device=device
        )
    raise SourceError(f"{source}: task '{task}' is not a text task")

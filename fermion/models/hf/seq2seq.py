"""`hf:` sequence-to-sequence text tasks: summarization, translation and text2text-generation.

transformers 5 dropped these pipelines, so the Services run `AutoModelForSeq2SeqLM.generate`
themselves. Each request sets `max_new_tokens`, so the endpoints are not batched; they run one
request at a time (generation uses every core for one request anyway).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from fermion.models.hf._pipeline import (
    GeneratedText,
    ModelService,
    check_model_dir,
    for_model,
    model_name,
    read_json,
    token_limit,
)
from fermion.models.kinds import SourceError
from fermion.responses import InvalidInput
from fermion.service import Service, endpoint

LongText = Annotated[
    str,
    Field(
        min_length=1,
        description="The text to summarize; text over the model's limit is truncated.",
        examples=["The Eiffel Tower ..."],
    ),
]
ExactText = Annotated[
    str,
    Field(
        min_length=1,
        description="The input text; text over the model's limit is refused (422).",
        examples=["Paris is in France."],
    ),
]
SourceText = Annotated[
    str,
    Field(
        min_length=1, description="The text to translate; text over the model's limit is refused (422).", examples=["I like tea."]
    ),
]
MaxNewTokens = Annotated[int, Field(ge=1, le=2048, description="The most tokens to generate.")]
LanguageCode = Annotated[
    str | None,
    Field(description="A language code the model knows: `en`, `en_XX` or `eng_Latn`, depending on the model.", examples=["de"]),
]


class _Seq2Seq(ModelService):
    """Generation with an encoder-decoder model (BART, T5, Marian, mBART, NLLB, ...)."""

    #: Whether input over the model's limit is cut (summaries) or refused with 422 (exact tasks).
    truncate = False

    def setup(self) -> None:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(self.model_dir).to(self.device).eval()
        self.limit = token_limit(self.tokenizer, self.model.config)
        self.task_params: dict[str, Any] = getattr(self.model.config, "task_specific_params", None) or {}

    def _generate(self, text: str, max_new_tokens: int, prefix: str = "", **options: Any) -> GeneratedText:
        import torch

        cut = self.truncate and self.limit is not None
        inputs = self.tokenizer(prefix + text, truncation=cut, max_length=self.limit if cut else None, return_tensors="pt")
        length = inputs["input_ids"].shape[1]
        if self.limit is not None and length > self.limit:
            raise InvalidInput(
                f"the text is too long: {length} tokens, and this model reads at most {self.limit}; send it in parts"
            )
        with torch.inference_mode():
            output = self.model.generate(**inputs.to(self.device), max_new_tokens=max_new_tokens, **options)
        return GeneratedText(text=self.tokenizer.decode(output[0], skip_special_tokens=True).strip())


class Summarization(_Seq2Seq):
    task = "summarization"
    truncate = True

    @endpoint(max_concurrency=1)
    def summarize(self, text: LongText, max_new_tokens: MaxNewTokens = 128) -> GeneratedText:
        """Summarize a text.

        Text longer than the model reads is truncated, so the summary covers its beginning.
        """
        prefix = (self.task_params.get("summarization") or {}).get("prefix", "")
        return self._generate(text, max_new_tokens, prefix)


class Text2TextGeneration(_Seq2Seq):
    task = "text2text-generation"

    @endpoint(max_concurrency=1)
    def generate(self, text: ExactText, max_new_tokens: MaxNewTokens = 128) -> GeneratedText:
        """Generate text from a text with a sequence-to-sequence model."""
        return self._generate(text, max_new_tokens)


class Translation(_Seq2Seq):
    task = "translation"

    def setup(self) -> None:
        super().setup()
        # T5-style models: one prefix per language pair, e.g. translation_en_to_de → "translate English to German: "
        self.pairs: dict[tuple[str, ...], str] = {
            tuple(key.removeprefix("translation_").split("_to_")): (params or {}).get("prefix", "")
            for key, params in self.task_params.items()
            if key.startswith("translation_")
        }

    @endpoint(max_concurrency=1)
    def translate(
        self,
        text: SourceText,
        max_new_tokens: MaxNewTokens = 256,
        source_lang: LanguageCode = None,
        target_lang: LanguageCode = None,
    ) -> GeneratedText:
        """Translate a text.

        One-pair models (Marian) need no languages. Models with task prefixes (T5) take the pair
        from `source_lang` and `target_lang` (either may do, if it names one pair). Many-language models
        (mBART-50, M2M100, NLLB) need `target_lang`, and `source_lang` unless the text is in
        their default language.
        """
        pairs = self.pairs
        if pairs:
            matching = [pair for pair in pairs if source_lang in (None, pair[0]) and target_lang in (None, pair[1])]
            if len(matching) != 1:
                known = ", ".join(f"{src} to {tgt}" for src, tgt in pairs)
                raise InvalidInput(f"this model translates {known}: pass source_lang and target_lang for one of those")
            return self._generate(text, max_new_tokens, pairs[matching[0]])
        options: dict[str, Any] = {}
        if source_lang is not None:
            self._language_id(source_lang, "source_lang")
            if hasattr(self.tokenizer, "src_lang"):
                self.tokenizer.src_lang = source_lang  # safe: one request at a time (max_concurrency=1)
        if target_lang is not None:
            options["forced_bos_token_id"] = self._language_id(target_lang, "target_lang")
        elif hasattr(self.tokenizer, "src_lang"):
            raise InvalidInput(
                "this model translates between many languages: pass target_lang (and source_lang) as codes its tokenizer knows"
            )
        return self._generate(text, max_new_tokens, **options)

    def _language_id(self, code: str, field: str) -> int:
        """The token id of a language code (M2M100 spells `de` as the token `__de__`)."""
        vocab = self.tokenizer.get_vocab()
        token = f"__{code}__" if f"__{code}__" in vocab else code
        if token not in vocab:
            raise InvalidInput(f"{field} {code!r} is not a language code this model's tokenizer knows")
        return int(vocab[token])


SEQ2SEQ: dict[str, type[_Seq2Seq]] = {
    "summarization": Summarization,
    "translation": Translation,
    "text2text-generation": Text2TextGeneration,
}


def build(model_dir: str, task: str, device: str | None = None) -> Service:
    """The Service for one sequence-to-sequence `task` of the model in `model_dir`, on `device` (default the CPU)."""
    source = f"hf:{model_dir}"
    check_model_dir(model_dir, source)
    if task not in SEQ2SEQ:
        raise SourceError(f"{source}: task '{task}' is not one of {', '.join(SEQ2SEQ)}")
    preprocessor = read_json(model_dir, "preprocessor_config.json")
    if preprocessor.get("feature_extractor_type") or preprocessor.get("image_processor_type"):
        reads = "audio" if preprocessor.get("feature_extractor_type") else "images"
        raise SourceError(
            f"{source}: this model reads {reads}, not text, so it cannot serve {task}; "
            "pass the --task it was made for (e.g. --task automatic-speech-recognition)"
        )
    description = f"{task.capitalize()} with {model_name(model_dir)}, a sequence-to-sequence model."
    return for_model(SEQ2SEQ[task], model_dir, description, device=device)

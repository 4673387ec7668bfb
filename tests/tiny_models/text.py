"""Tiny random text models (BERT heads, a BART seq2seq model) saved as Hugging Face folders for `hf:` tests.

Each builder writes a complete model folder (config, weights, tokenizer) in well under a second
and returns its path. Weights are random, so answers are too: tests check shapes, types, label
sets and score ranges, never what the model "says".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

WORDS = (
    "the a an is was of to and in on at for with by from it this that paris france capital city river "
    "berlin germany john mary lives works london big small good bad great terrible movie film book "
    "happy sad love hate weather today tomorrow sun rain sports politics music news game team won lost "
    "who what where when how why which do does did answer question text summary short long one two three"
).split()
SUFFIXES = ("##s", "##ed", "##ing", "##ly", "##er")
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: Longest input the BERT models read, in tokens (small so that tests can exceed it).
MAX_TOKENS = 32

SENTIMENT_LABELS = ("negative", "neutral", "positive")
NER_LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
NLI_LABELS = ("contradiction", "neutral", "entailment")


def _bert_tokenizer(folder: Path) -> Any:
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tokens = [*SPECIAL, *WORDS, *SUFFIXES, *".,?!'"]
    return BertTokenizerFast(vocab={token: i for i, token in enumerate(tokens)}, model_max_length=MAX_TOKENS)


def _bert_config(tokenizer: Any, labels: tuple[str, ...] | None = None) -> Any:
    from transformers import BertConfig

    extra: dict[str, Any] = {}
    if labels:
        extra = {"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}}
    return BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=MAX_TOKENS,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def build_bert(folder: Path, head: str, labels: tuple[str, ...] | None = None) -> Path:
    """A one-layer BERT with `head` ("sequence", "token", "masked-lm", "qa", "base") saved in `folder`."""
    import torch
    import transformers

    classes = {
        "sequence": transformers.BertForSequenceClassification,
        "token": transformers.BertForTokenClassification,
        "masked-lm": transformers.BertForMaskedLM,
        "qa": transformers.BertForQuestionAnswering,
        "base": transformers.BertModel,
    }
    torch.manual_seed(0)
    tokenizer = _bert_tokenizer(folder)
    model = classes[head](_bert_config(tokenizer, labels))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def sentiment_model(folder: Path) -> Path:
    """text-classification: negative / neutral / positive."""
    return build_bert(folder, "sequence", SENTIMENT_LABELS)


def ner_model(folder: Path) -> Path:
    """token-classification with BIO person and location tags."""
    return build_bert(folder, "token", NER_LABELS)


def nli_model(folder: Path) -> Path:
    """A sequence classifier with NLI labels: detected as zero-shot-classification."""
    return build_bert(folder, "sequence", NLI_LABELS)


def masked_lm(folder: Path) -> Path:
    """fill-mask, mask token `[MASK]`."""
    return build_bert(folder, "masked-lm")


def qa_model(folder: Path) -> Path:
    """Extractive question answering (start/end logits)."""
    return build_bert(folder, "qa")


def encoder(folder: Path) -> Path:
    """A bare encoder (`BertModel`): detected as feature-extraction, hidden size 16."""
    return build_bert(folder, "base")


SEQ2SEQ_CORPUS = (
    "the quick brown fox jumps over the lazy dog. summarize: a long text becomes a short one. "
    "translate english to german: the house is wonderful. das haus ist wunderbar. "
    "paris is the capital of france. berlin is the capital of germany."
)
#: Language codes the seq2seq tokenizer knows, as a multilingual translation model's would.
LANGUAGE_TOKENS = ("en_XX", "de_DE")


def seq2seq_model(folder: Path, task_prefixes: bool = False) -> Path:
    """A one-layer BART with a byte-level BPE tokenizer trained here (detected as text2text-generation).

    With `task_prefixes`, the config carries T5-style `task_specific_params` prefixes.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([SEQ2SEQ_CORPUS] * 4, trainer)
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        additional_special_tokens=list(LANGUAGE_TOKENS),
        model_max_length=64,
    )
    extra: dict[str, Any] = {}
    if task_prefixes:
        extra["task_specific_params"] = {
            "summarization": {"prefix": "summarize: "},
            "translation_en_to_de": {"prefix": "translate English to German: "},
            "translation_en_to_fr": {"prefix": "translate English to French: "},
        }
    torch.manual_seed(0)
    config = BartConfig(
        vocab_size=len(tokenizer),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=None,
        **extra,
    )
    BartForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

"""A tiny GPT-2-style causal LM with a byte-level BPE tokenizer, built locally in about a second."""

from __future__ import annotations

from pathlib import Path

#: The chat template of the tiny model: one `<|role|>content` line per message.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
EOS = "<|endoftext|>"
_SPECIAL = [EOS, "<|system|>", "<|user|>", "<|assistant|>"]
# GPT-2's byte-to-unicode map keeps bytes 33-126 as they are and shows space as 'Ġ', newline as 'Ċ'.
_PRINTABLE = [chr(b) for b in range(33, 127)] + ["\u0120", "\u010a"]
_CORPUS = [
    "Fermion serves models over HTTP with typed endpoints.",
    "The quick brown fox jumps over the lazy dog.",
    "Hello, how are you today? I am fine, thank you.",
    "Language models predict the next token from the ones before it.",
    "Streaming sends each piece of text as soon as it is ready.",
    "Numbers like 1, 2, 3 and 42 appear in text too.",
]


def build_tokenizer(chat_template: str | None = CHAT_TEMPLATE):  # -> PreTrainedTokenizerFast
    """A byte-level BPE trained on a few sentences, with an end-of-text token and (optionally) a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=_SPECIAL,
        initial_alphabet=_PRINTABLE,  # every token decodes to printable ASCII
        show_progress=False,
    )
    backend.train_from_iterator(_CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, bos_token=EOS, pad_token=EOS)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def build_tiny_llm(folder: Path, *, chat_template: str | None = CHAT_TEMPLATE, seed: int = 0, n_positions: int = 128) -> Path:
    """Save a randomly initialised 2-layer GPT-2 (n_embd=32) and its tokenizer into `folder`.

    A larger `n_positions` gives room for long generations (tests that need a request to keep running).
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = build_tokenizer(chat_template)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        tie_word_embeddings=False,  # a tied random model just repeats its last input token
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

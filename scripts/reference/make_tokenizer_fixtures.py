#!/usr/bin/env python3
"""Write tokenizer fixtures and their expected encodings/decodings.

  Tests/Fixtures/tokenizer/{llama,metaspace,llama_v5}/tokenizer.json (+ tokenizer_config.json)
  Tests/Fixtures/tokenizer/cases.json

Every case is encoded with `tokenizers.Tokenizer.from_file(...)` and cross-checked against
transformers' `PreTrainedTokenizerFast(tokenizer_file=...)`; any disagreement is an error.

Usage: python3 scripts/reference/make_tokenizer_fixtures.py [--out Tests/Fixtures/tokenizer]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_tokenizer import save_tokenizer  # noqa: E402

from tokenizers import Tokenizer  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
STYLES = ["llama", "metaspace", "llama_v5"]
VOCAB_SIZE = 640

F = "<fake_token_around_image>"
I = "<image>"
IMG = F + I + F

TEXTS = [
    # ASCII sentences
    "Hello world",
    "The cat is sitting on the red car.",
    "Describe this image.",
    "a",
    "A",
    "the the the the",
    # punctuation
    "Hello, world! What? Yes: no; (maybe) \"quoted\" 'single' ...",
    "!!!???...,,,",
    "e-mail@example.com #42 $5 100% a_b a/b a\\b ~`^|",
    # runs of spaces, leading / trailing spaces
    "two  spaces",
    "three   spaces",
    "eight        spaces",
    " leading space",
    "   three leading spaces",
    "trailing space ",
    "trailing spaces   ",
    " ",
    "  ",
    "        ",
    # newlines and tabs
    "line one\nline two",
    "para\n\npara",
    "\n",
    "\nleading newline",
    "tab\tseparated\tvalues",
    "\t\tindented",
    "mixed \t\n whitespace \r\n end",
    "def f(x):\n    return x + 1\n",
    # digits and long numbers
    "0",
    "12345",
    "3.14159265358979",
    "The year 2023 had 365 days and 8760 hours.",
    "12345678901234567890123456789012345678901234567890",
    "-1e-10 +42 0x1F 1,000,000",
    # CJK (some characters in vocab, most fall back to bytes)
    "你好",
    "你好世界",
    "这是一张图片",
    "日本語のテキストです。",
    "한국어 텍스트",
    "Mixed 中文 and English",
    # emoji (4-byte UTF-8 -> byte fallback)
    "🦩",
    "Flamingo 🦩 emoji 😀👍🏽",
    "👨‍👩‍👧",
    # accented Latin
    "café naïve résumé",
    "Ångström Øresund ŽŠČ ñ ü ß",
    "déjà vu à la façade",
    # empty string
    "",
    # image markers inside text
    I,
    F,
    IMG,
    "before" + I + "after",
    "before " + I + " after",
    "before  " + I + "  after",
    "text" + IMG + "text",
    "text " + IMG + " text",
    " " + IMG,
    IMG + " ",
    IMG + IMG,
    F + I + F + I + F,
    "<image",
    "<image> <image>",
    "< image >",
    "<s>literal bos</s> in text",
    "User:" + IMG + "Describe this image.<end_of_utterance>\nAssistant:",
    # IDEFICS-style few-shot prompts
    IMG + "Question: What is in the image? Answer: A cat.\n" + IMG + "Question: What is in the image? Answer:",
    "Instruction: provide an answer to the question. Use the image to answer.\n" + IMG
    + "Question: What color is the car? Answer: red.\n" + IMG + "Question: How many dogs? Answer: 2\n"
    + IMG + "Question: What is this? Answer:",
    IMG + "Caption: two birds flying over a river.\n\n" + IMG + "Caption:",
]


def build_cases(tok_dir):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    cases = []
    for style in STYLES:
        path = os.path.join(tok_dir, style, "tokenizer.json")
        tok = Tokenizer.from_file(path)
        hf = PreTrainedTokenizerFast(tokenizer_file=path, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
        auto = AutoTokenizer.from_pretrained(os.path.join(tok_dir, style))  # reads tokenizer_config.json
        for text in TEXTS:
            enc = tok.encode(text)
            ids = enc.ids
            ids_ns = tok.encode(text, add_special_tokens=False).ids
            hf_ids = hf(text, add_special_tokens=True)["input_ids"]
            hf_ids_ns = hf(text, add_special_tokens=False)["input_ids"]
            if auto(text)["input_ids"] != ids or auto.decode(ids) != tok.decode(ids, skip_special_tokens=False):
                raise SystemExit("AutoTokenizer disagrees with tokenizers for %s %r" % (style, text))
            if hf_ids != ids or hf_ids_ns != ids_ns:
                raise SystemExit("transformers disagrees with tokenizers for %s %r:\n %s\n %s\n %s\n %s"
                                 % (style, text, ids, hf_ids, ids_ns, hf_ids_ns))
            decoded = tok.decode(ids, skip_special_tokens=False)
            decoded_skip = tok.decode(ids, skip_special_tokens=True)
            hf_dec = hf.decode(ids, skip_special_tokens=False)
            hf_dec_skip = hf.decode(ids, skip_special_tokens=True)
            if (hf_dec, hf_dec_skip) != (decoded, decoded_skip):
                raise SystemExit("transformers decode disagrees for %s %r: %r %r vs %r %r"
                                 % (style, text, decoded, decoded_skip, hf_dec, hf_dec_skip))
            cases.append({
                "tokenizer": style,
                "text": text,
                "ids": ids,
                "ids_no_special": ids_ns,
                "tokens": enc.tokens,
                "decoded": decoded,
                "decoded_skip": decoded_skip,
            })
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "Tests", "Fixtures", "tokenizer"))
    args = ap.parse_args()
    for style in STYLES:
        save_tokenizer(os.path.join(args.out, style), vocab_size=VOCAB_SIZE, style=style)
    cases = build_cases(args.out)
    doc = {
        "about": "Expected encodings of tiny LLaMA-style tokenizers (scripts/reference/make_tokenizer_fixtures.py). "
                 "ids = encode(text) with special tokens (BOS prepended by the post-processor); "
                 "ids_no_special = encode(text, add_special_tokens=False); tokens = token strings of ids; "
                 "decoded = decode(ids, skip_special_tokens=False); decoded_skip = decode(ids, skip_special_tokens=True). "
                 "Verified identical with tokenizers and transformers' PreTrainedTokenizerFast.",
        "base_vocab_size": VOCAB_SIZE,
        "special_ids": {"<unk>": 0, "<s>": 1, "</s>": 2, F: VOCAB_SIZE, I: VOCAB_SIZE + 1,
                        "<end_of_utterance>": VOCAB_SIZE + 2},
        "cases": cases,
    }
    with open(os.path.join(args.out, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print("wrote %d cases (%d texts x %d tokenizers) to %s" % (len(cases), len(TEXTS), len(STYLES), args.out))


if __name__ == "__main__":
    main()

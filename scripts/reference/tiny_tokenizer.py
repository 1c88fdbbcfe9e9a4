#!/usr/bin/env python3
"""Tiny LLaMA-style tokenizers for tests (dev-time reference tool, not part of the product).

build_tokenizer(vocab_size=640, style="llama") returns a `tokenizers.Tokenizer` whose
tokenizer.json has the same structure as LLaMA's / IDEFICS's:

  model: BPE, byte_fallback=true, fuse_unk=true, unk_token="<unk>", no dropout
  vocab: <unk>=0, <s>=1, </s>=2, <0x00>=3 .. <0xFF>=258, then learned pieces ("▁" = space)
  added tokens (special, normalized=false): <unk>, <s>, </s> (ids 0..2), then AFTER the base
      vocab: <fake_token_around_image>=V, <image>=V+1, <end_of_utterance>=V+2 (V = base vocab
      size). IDEFICS models have vocab_size=V and additional_vocab_size=2, i.e. only the first
      two added tokens have embeddings; <end_of_utterance> (as in idefics-9b-instruct's
      tokenizer) has no embedding row in the model and must never be fed to it.
  post_processor: TemplateProcessing "<s> $A" (pair "<s> $A <s> $B"), as LLaMA's.
  merges: "a b" strings for style "llama" (as in LLaMA/IDEFICS files), ["a", "b"] pairs otherwise.

Styles:
  "llama"     (legacy LLaMA / IDEFICS tokenizer.json)
              normalizer Sequence[Prepend("▁"), Replace(" ", "▁")], pre_tokenizer null,
              decoder Sequence[Replace("▁"," "), ByteFallback, Fuse, Strip(" ",1,0)]
  "metaspace" (newer files) normalizer null,
              pre_tokenizer Metaspace(replacement "▁", prepend_scheme "first", split false),
              decoder Metaspace(replacement "▁", prepend_scheme "first", split false)
              NB: a Metaspace decoder does not do byte fallback: <0xE4> tokens decode to the
              literal text "<0xE4>" (that is what tokenizers does, and what the goldens record).
  "llama_v5"  what transformers 5's LlamaTokenizer writes: normalizer null, Metaspace
              pre-tokenizer as "metaspace", decoder as "llama".

Training is deterministic: the corpus is generated here from a seeded PRNG and the trainer
runs on one thread.
"""
import json
import os
import random

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

SPACE = "\u2581"  # ▁
BASE_SPECIALS = ["<unk>", "<s>", "</s>"]
IMAGE_SPECIALS = ["<fake_token_around_image>", "<image>"]
EXTRA_SPECIALS = ["<end_of_utterance>"]

_WORDS = (
    "the a an of to and in is it that for on with as was by at be this are from or have not but "
    "what which one all were when we there can your more if their about out up so said some would "
    "image picture photo cat dog bird car tree house sky river mountain person people child man woman "
    "red green blue yellow black white small large big little old new two three four five many "
    "sitting standing running eating looking playing holding wearing walking flying "
    "question answer describe caption shows contains there user assistant model vision language "
    "flamingo idefics token prompt example answer: question: describe this "
    "café naïve résumé über straße façade déjà señor año garçon"
).split()
_CODE = [
    "def f(x):\n    return x + 1\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }\n",
    "let y = map(xs) { $0 * 2 }\n",
    "if (a == b && c != d) return -1;\n",
    "print(\"hello, world!\")\n",
    "x = [1, 2, 3]; y = {'k': 'v'}\n",
    "\tindent\twith\ttabs\n",
    "// comment: TODO fix #42\n",
]
_CJK = ["图像", "图片", "一只猫", "你好", "世界", "中文", "日本語", "こんにちは", "한국어"]
_PUNCT = [".", ",", "!", "?", ":", ";", "...", "-", "(", ")", "\"", "'"]


def make_corpus(seed=0, n_lines=3000):
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        kind = rng.random()
        if kind < 0.70:
            n = rng.randint(3, 14)
            words = [rng.choice(_WORDS) for _ in range(n)]
            if rng.random() < 0.5:
                words[0] = words[0].capitalize()
            s = " ".join(words)
            if rng.random() < 0.3:
                s = s.replace(" ", " " + rng.choice(_PUNCT) + " ", 1)
            s += rng.choice(_PUNCT[:4])
            if rng.random() < 0.2:
                s += " " + str(rng.randint(0, 10 ** rng.randint(1, 6)))
        elif kind < 0.85:
            s = rng.choice(_CODE)
        elif kind < 0.95:
            s = "".join(rng.choice(_CJK) for _ in range(rng.randint(1, 4)))
        else:
            s = "%d %d.%d %s" % (rng.randint(0, 99999), rng.randint(0, 99), rng.randint(0, 99),
                                  "  ".join(rng.choice(_WORDS) for _ in range(3)))
        lines.append(s)
    return lines


def _byte_tokens():
    return ["<0x%02X>" % b for b in range(256)]


def build_tokenizer(vocab_size=640, style="llama", seed=0, extra_specials=True):
    """Train and return a LLaMA-style `tokenizers.Tokenizer` with base vocab size `vocab_size`.

    Added special tokens follow at ids vocab_size, vocab_size+1 (and vocab_size+2 for
    <end_of_utterance> unless extra_specials=False).
    """
    if style not in ("llama", "metaspace", "llama_v5"):
        raise ValueError("unknown style %r" % style)
    n_fixed = len(BASE_SPECIALS) + 256
    if vocab_size <= n_fixed + 64:
        raise ValueError("vocab_size too small")

    # 1. Learn pieces + merges with a word-splitting pre-tokenizer ("▁word" pieces, like
    #    sentencepiece's training which never merges across spaces).
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - n_fixed, min_frequency=2, show_progress=False,
                                  special_tokens=[], max_token_length=12)
    trainer_tok.train_from_iterator(make_corpus(seed), trainer=trainer)
    learned = json.loads(trainer_tok.to_str())["model"]
    learned_vocab = sorted(learned["vocab"].items(), key=lambda kv: kv[1])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]

    # 2. Final vocab: specials, byte tokens, learned pieces (fill up to vocab_size exactly).
    vocab = {}
    for t in BASE_SPECIALS + _byte_tokens():
        vocab[t] = len(vocab)
    for t, _ in learned_vocab:
        if t not in vocab and len(vocab) < vocab_size:
            vocab[t] = len(vocab)
    merges = [m for m in merges if m[0] in vocab and m[1] in vocab and (m[0] + m[1]) in vocab]
    if len(vocab) != vocab_size:
        raise RuntimeError("learned only %d tokens, wanted %d" % (len(vocab), vocab_size))

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True,
                               byte_fallback=True, dropout=None))
    llama_decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse(),
                                       decoders.Strip(" ", 1, 0)])
    if style == "llama":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
        tok.pre_tokenizer = None
        tok.decoder = llama_decoder
    else:
        tok.normalizer = None
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="first", split=False)
        if style == "metaspace":
            tok.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="first", split=False)
        else:
            tok.decoder = llama_decoder
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", 1)])

    specials = BASE_SPECIALS + IMAGE_SPECIALS + (EXTRA_SPECIALS if extra_specials else [])
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    for i, t in enumerate(IMAGE_SPECIALS + (EXTRA_SPECIALS if extra_specials else [])):
        assert tok.token_to_id(t) == vocab_size + i, (t, tok.token_to_id(t))
    return tok


def tokenizer_config(tok, vocab_size, model_max_length=2048):
    """tokenizer_config.json content (transformers format) matching `tok`."""
    added = {}
    for i in range(tok.get_vocab_size(with_added_tokens=True)):
        t = tok.id_to_token(i)
        if t in BASE_SPECIALS + IMAGE_SPECIALS + EXTRA_SPECIALS:
            added[str(i)] = {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                             "single_word": False, "special": True}
    extra = [t for t in IMAGE_SPECIALS + EXTRA_SPECIALS if tok.token_to_id(t) is not None]
    return {
        # Real IDEFICS files say "LlamaTokenizer", but transformers 5's LlamaTokenizer discards the
        # normalizer / pre-tokenizer / decoder of tokenizer.json and installs its own (Metaspace with
        # prepend_scheme "always"), which changes ids (e.g. " leading space", "a<image>b"). The
        # generic class keeps AutoTokenizer faithful to tokenizer.json, which is the ground truth here.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<unk>",
        "additional_special_tokens": extra,
        "added_tokens_decoder": added,
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": model_max_length,
        "padding_side": "right",
    }


def save_tokenizer(out_dir, vocab_size=640, style="llama", seed=0, extra_specials=True):
    os.makedirs(out_dir, exist_ok=True)
    tok = build_tokenizer(vocab_size=vocab_size, style=style, seed=seed, extra_specials=extra_specials)
    text = tok.to_str(pretty=True)
    if style == "llama":
        # LLaMA / IDEFICS files (written by older tokenizers) store merges as "a b" strings;
        # tokenizers >= 0.20 writes ["a", "b"] pairs (kept for the other styles). Both load.
        doc = json.loads(text)
        doc["model"]["merges"] = ["%s %s" % tuple(m) for m in doc["model"]["merges"]]
        text = json.dumps(doc, indent=2, ensure_ascii=False)
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(text)
        f.write("\n")
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_config(tok, vocab_size), f, indent=2, ensure_ascii=False)
        f.write("\n")
    return tok


if __name__ == "__main__":
    import sys
    t = build_tokenizer(style=sys.argv[1] if len(sys.argv) > 1 else "llama")
    for s in ["Hello world! The cat is sitting.", "  two  spaces", "你好 图像 猫 🦩", "<image>x"]:
        e = t.encode(s)
        print(repr(s), e.ids, e.tokens, repr(t.decode(e.ids, skip_special_tokens=False)))

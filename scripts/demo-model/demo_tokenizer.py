"""The demo model's tokenizer: scripts/reference/tiny_tokenizer.build_tokenizer (style "llama"),
trained on the demo's own text (every prompt, question, answer and caption it uses) instead of
tiny_tokenizer's generic corpus. Base vocab = the smallest size the corpus fills exactly, plus the
two IDEFICS image tokens (<fake_token_around_image> = V, <image> = V + 1)."""
import contextlib
import itertools
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import tiny_tokenizer  # noqa: E402

import scenes as S  # noqa: E402
import tasks as T  # noqa: E402


def corpus():
    lines = []
    words = []
    for shape, colour, n in itertools.product(S.SHAPES, sorted(S.COLOURS), range(1, 5)):
        noun = shape if n == 1 else S.PLURALS[shape]
        cap = "%s %s %s" % (S.COUNT_WORDS[n - 1], colour, noun)
        lines.append("%s %s." % (T.CAPTION_PROMPT, cap))
        words += [shape, colour, S.COUNT_WORDS[n - 1]]
    for task in T.TASKS:
        for q in [T.QUESTIONS[task]] + T.PARAPHRASES[task]:
            for w in (S.SHAPES if task == "shape" else sorted(S.COLOURS) if task == "colour" else S.COUNT_WORDS):
                lines.append("%s %s." % (q, w))
    for w in words:
        lines.append("%s %s." % (T.FEWSHOT_PROMPT, w))
    # bare prompt endings, as the engine tokenizes them
    lines += [T.FEWSHOT_PROMPT, T.CAPTION_PROMPT] + list(T.QUESTIONS.values())
    return lines


@contextlib.contextmanager
def _corpus_patched(lines):
    saved = tiny_tokenizer.make_corpus
    tiny_tokenizer.make_corpus = lambda seed=0, n_lines=0: list(lines)
    try:
        yield
    finally:
        tiny_tokenizer.make_corpus = saved


def build():
    """(tokenizer, base_vocab_size): the largest base vocab the corpus can fill, searched downward."""
    lines = corpus() * 3   # min_frequency 2: every piece must occur at least twice
    with _corpus_patched(lines):
        for v in range(640, 330, -1):
            try:
                return tiny_tokenizer.build_tokenizer(vocab_size=v, style="llama", extra_specials=False), v
            except RuntimeError:
                continue
    raise RuntimeError("no vocab size fits the demo corpus")


def save(tok, vocab_size, out_dir):
    """tokenizer.json (LLaMA file layout: merges as "a b" strings) + tokenizer_config.json."""
    doc = json.loads(tok.to_str(pretty=True))
    doc["model"]["merges"] = ["%s %s" % tuple(m) if not isinstance(m, str) else m for m in doc["model"]["merges"]]
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(doc, indent=2, ensure_ascii=False))
        f.write("\n")
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tiny_tokenizer.tokenizer_config(tok, vocab_size, model_max_length=256), f, indent=2, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    tok, v = build()
    print("base vocab", v)
    for s in ["Question: what colour are the shapes? Answer: purple.", "Output: crosses.", "A photo of four yellow stars."]:
        e = tok.encode(s, add_special_tokens=False)
        print(e.tokens)

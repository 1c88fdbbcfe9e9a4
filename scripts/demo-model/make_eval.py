"""Held-out evaluation sets and examples for the demo model, with PyTorch (transformers) predictions.

  make_eval.main(model_dir, eval_dir)   (run by scripts/train-demo after training, or --eval-only)

Writes, from scenes drawn with a seed the training never uses (EVAL_SEED):
  eval_dir/img/*.png                 48x48 RGB PNGs
  eval_dir/heldout200.jsonl          200 images x 3 questions (colour, shape, count) = 600 lines
  eval_dir/fewshot.jsonl             150 instruction-free cases, each as fewshot-0shot and fewshot-2shot
  eval_dir/subset50.jsonl            50 fixed cases (30 questions, 10 2-shot, 5 0-shot, 5 captions) with
                                     "pytorch_prediction" / "pytorch_tokens" from transformers' generate
  eval_dir/pytorch_results.json      accuracy per task measured with transformers on every line
  model_dir/examples/*.png, prompts.txt

Every line: {"prompt", "images" (relative to the jsonl file), "max_tokens", "answer", "task"}.
Prompts are the CLI --prompt form; input_ids / image_attention_mask / pixel_values fed to
transformers are built with IdeficsProcessor itself (and asserted equal to what the training used).
Exact match: the generated text, trimmed of spaces and one trailing ".", equals "answer".
"""
import json
import os
import random
import shutil

import numpy as np
import torch

import common as C
import scenes as S
import tasks as T

EVAL_SEED = "demo-eval-2026"      # training uses random.Random(int seed); never this string
EXAMPLES_SEED = "demo-examples-2026"
N_HELDOUT = 200
N_FEWSHOT = 150
QA_MAX_TOKENS = 4
CAPTION_MAX_TOKENS = 8


def exact_match(text, answer):
    t = text.strip(" ")
    if t.endswith("."):
        t = t[:-1]
    return t.strip(" ") == answer


class Reference:
    """transformers model + IdeficsProcessor loaded from the saved directory, as a user would."""

    def __init__(self, model_dir):
        C.import_transformers()
        import tokenizers
        from transformers import AutoImageProcessor, IdeficsForVisionText2Text, PreTrainedTokenizerFast
        from transformers.models.idefics.processing_idefics import IdeficsProcessor
        self.model = IdeficsForVisionText2Text.from_pretrained(model_dir, dtype=torch.float32,
                                                               attn_implementation="eager")
        self.model.eval()
        self.image_processor = AutoImageProcessor.from_pretrained(model_dir)
        hf_tok = PreTrainedTokenizerFast.from_pretrained(model_dir)
        self.processor = IdeficsProcessor(self.image_processor, hf_tok, image_size=C.IMAGE_SIZE)
        self.tok = tokenizers.Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        self.enc = T.Encoder(self.tok)
        self.backend = getattr(self.image_processor, "backend", type(self.image_processor).__name__)

    def inputs(self, items, image_files):
        """Processor inputs for items whose last answer is left out; cross-checked with the Encoder."""
        from PIL import Image
        pil = iter([Image.open(p) for p in image_files])
        proc_items = []
        for i, it in enumerate(items):
            if isinstance(it, T.Img):
                proc_items.append(next(pil))
            else:
                proc_items.append(it.prompt if i == len(items) - 1 else it.piece())
        ref = self.processor(text=[proc_items], add_end_of_utterance_token=False, return_tensors="pt")
        ids, _, image_index = self.enc.encode(items, drop_last_answer=True)
        assert ref["input_ids"][0].tolist() == ids, (ref["input_ids"][0].tolist(), ids)
        iam = ref["image_attention_mask"][0]
        for t, k in enumerate(image_index):
            want = [0] * iam.shape[1]
            if k >= 0:
                want[k] = 1
            assert iam[t].tolist() == want, (t, iam[t].tolist(), want)
        mine = torch.stack([C.pixels(S.draw(it.scene, C.IMAGE_SIZE)) for it in items if isinstance(it, T.Img)])
        diff = float((ref["pixel_values"][0] - mine).abs().max())
        assert diff < 1e-6, "pixel values differ from the training preprocessing by %g" % diff
        return ref

    @torch.no_grad()
    def generate(self, items, image_files, max_tokens):
        ref = self.inputs(items, image_files)
        ids = ref["input_ids"]
        out = self.model.generate(input_ids=ids, pixel_values=ref["pixel_values"],
                                  image_attention_mask=ref["image_attention_mask"],
                                  attention_mask=torch.ones_like(ids), do_sample=False,
                                  max_new_tokens=max_tokens, pad_token_id=T.PAD_ID, eos_token_id=T.EOS_ID)
        new = out[0, ids.shape[1]:].tolist()
        return self.tok.decode(new, skip_special_tokens=True), new


def _save(scene, path):
    S.draw(scene, C.IMAGE_SIZE).save(path, optimize=True)


def build_cases(eval_dir):
    """All eval cases (items, image files, answer, task, max_tokens); writes the PNGs."""
    rng = random.Random(EVAL_SEED)
    img_dir = os.path.join(eval_dir, "img")
    if os.path.isdir(img_dir):
        shutil.rmtree(img_dir)
    os.makedirs(img_dir)
    heldout, fewshot = [], []
    # 200 held-out images: shapes and counts balanced (40 per shape, 50 per count), colours random
    combos = [(S.SHAPES[i % len(S.SHAPES)], 1 + (i // len(S.SHAPES)) % 4) for i in range(N_HELDOUT)]
    rng.shuffle(combos)
    held_scenes = []
    for i, (shape, count) in enumerate(combos):
        sc = S.sample_scene(rng, C.IMAGE_SIZE, shape=shape, count=count)
        rel = "img/h%03d.png" % i
        _save(sc, os.path.join(eval_dir, rel))
        held_scenes.append((sc, rel))
        for task in T.TASKS:
            heldout.append(dict(items=T.vqa_items(sc, task), files=[rel], answer=sc.attribute(task), task=task,
                                max_tokens=QA_MAX_TOKENS, id="h%03d-%s" % (i, task)))
    # instruction-free few-shot: 50 per attribute; 0-shot = the same query image and template alone
    fs_tasks = [T.TASKS[i % 3] for i in range(N_FEWSHOT)]
    rng.shuffle(fs_tasks)
    for i, task in enumerate(fs_tasks):
        ex = [S.sample_scene(rng, C.IMAGE_SIZE) for _ in range(2)]
        q = S.sample_scene(rng, C.IMAGE_SIZE)
        rels = ["img/f%03d_e%d.png" % (i, j) for j in range(2)] + ["img/f%03d_q.png" % i]
        for sc, rel in zip(ex + [q], rels):
            _save(sc, os.path.join(eval_dir, rel))
        fewshot.append(dict(items=T.fewshot_items([], q, task), files=rels[2:], answer=q.attribute(task),
                            task="fewshot-0shot", attribute=task, max_tokens=QA_MAX_TOKENS, id="f%03d-0shot" % i))
        fewshot.append(dict(items=T.fewshot_items(ex, q, task), files=rels, answer=q.attribute(task),
                            task="fewshot-2shot", attribute=task, max_tokens=QA_MAX_TOKENS, id="f%03d-2shot" % i))
    captions = [dict(items=T.caption_items(sc), files=[rel], answer=sc.caption(), task="caption",
                     max_tokens=CAPTION_MAX_TOKENS, id="h%03d-caption" % i)
                for i, (sc, rel) in enumerate(held_scenes)]
    return heldout, fewshot, captions


def _line(case, extra=None):
    d = {"prompt": T.prompt_string(case["items"]), "images": case["files"], "max_tokens": case["max_tokens"],
         "answer": case["answer"], "task": case["task"]}
    if "attribute" in case:
        d["attribute"] = case["attribute"]
    d["id"] = case["id"]
    d.update(extra or {})
    return json.dumps(d, ensure_ascii=False)


def _accuracy(cases, key):
    out = {}
    for c in cases:
        k = c[key]
        n, ok = out.get(k, (0, 0))
        out[k] = (n + 1, ok + int(c["correct"]))
    return {k: {"n": n, "correct": ok, "accuracy": round(ok / n, 4)} for k, (n, ok) in sorted(out.items())}


def write_examples(ref, model_dir):
    """3-4 example images the model answers correctly for every listed prompt, + prompts.txt."""
    ex_dir = os.path.join(model_dir, "examples")
    if os.path.isdir(ex_dir):
        shutil.rmtree(ex_dir)
    os.makedirs(ex_dir)
    rng = random.Random(EXAMPLES_SEED)
    wanted = [("circle", "red", 2), ("triangle", "blue", 3), ("star", "yellow", 1), ("cross", "green", 4)]
    lines = ["# Example prompts for models/demo (expected answers after '=>').",
             "# Run from the repository root, e.g.:",
             "#   .build/release/flamingo generate --model models/demo --image models/demo/examples/two_red_circles.png \\",
             "#       --prompt \"<image>Question: how many shapes are there? Answer:\" --greedy --max-tokens 4",
             "# Few-shot lines list several images: pass one --image per <image>, in order.", ""]
    picked = []
    for shape, colour, count in wanted:
        for _ in range(200):
            sc = S.sample_scene(rng, C.IMAGE_SIZE, shape=shape, colour=colour, count=count)
            name = "%s.png" % sc.caption().replace(" ", "_")
            path = os.path.join(ex_dir, name)
            _save(sc, path)
            cases = [T.vqa_items(sc, t) for t in T.TASKS] + [T.caption_items(sc)]
            answers = [sc.attribute(t) for t in T.TASKS] + [sc.caption()]
            got = [ref.generate(it, [path], CAPTION_MAX_TOKENS)[0] for it in cases]
            if all(exact_match(g, a) for g, a in zip(got, answers)):
                picked.append((sc, name))
                for it, a in zip(cases, answers):
                    lines.append("%s  [%s]  =>  %s." % (T.prompt_string(it), name, a))
                lines.append("")
                break
            os.remove(path)
        else:
            raise RuntimeError("no correctly answered example for %s" % ((shape, colour, count),))
    # an instruction-free few-shot line: the first two images' answers say "colour", then "count"
    (a, na), (b, nb), (c, nc) = picked[0], picked[1], picked[2]
    for task in ("colour", "count", "shape"):
        items = T.fewshot_items([a, b], c, task)
        files = [os.path.join(ex_dir, n) for n in (na, nb, nc)]
        got = ref.generate(items, files, QA_MAX_TOKENS)[0]
        status = "" if exact_match(got, c.attribute(task)) else "   (PyTorch says %r)" % got
        lines.append("%s  [%s %s %s]  =>  %s.%s" % (T.prompt_string(items), na, nb, nc, c.attribute(task), status))
    with open(os.path.join(ex_dir, "prompts.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return [n for _, n in picked]


def main(model_dir, eval_dir):
    ref = Reference(model_dir)
    print("reference: transformers generate (greedy, eager attention), image processor backend %s" % ref.backend,
          flush=True)
    os.makedirs(eval_dir, exist_ok=True)
    heldout, fewshot, captions = build_cases(eval_dir)
    for group in (heldout, fewshot, captions):
        for c in group:
            c["text"], c["tokens"] = ref.generate(c["items"], [os.path.join(eval_dir, f) for f in c["files"]],
                                                  c["max_tokens"])
            c["correct"] = exact_match(c["text"], c["answer"])
    with open(os.path.join(eval_dir, "heldout200.jsonl"), "w") as f:
        f.writelines(_line(c) + "\n" for c in heldout)
    with open(os.path.join(eval_dir, "fewshot.jsonl"), "w") as f:
        f.writelines(_line(c) + "\n" for c in fewshot)
    # subset50: fixed positions (the first cases of each kind)
    by_task = {t: [c for c in heldout if c["task"] == t] for t in T.TASKS}
    subset = (by_task["colour"][:10] + by_task["shape"][:10] + by_task["count"][:10]
              + [c for c in fewshot if c["task"] == "fewshot-2shot"][:10]
              + [c for c in fewshot if c["task"] == "fewshot-0shot"][:5] + captions[:5])
    with open(os.path.join(eval_dir, "subset50.jsonl"), "w") as f:
        f.writelines(_line(c, {"pytorch_prediction": c["text"], "pytorch_tokens": c["tokens"]}) + "\n"
                     for c in subset)
    results = {
        "about": "Exact-match accuracy of the PyTorch reference (transformers generate, greedy) on every line; "
                 "the Swift engine's numbers are in models/demo/README.md.",
        "heldout200": _accuracy(heldout, "task"),
        "fewshot": _accuracy(fewshot, "task"),
        "fewshot_by_attribute": _accuracy([dict(c, key="%s/%s" % (c["task"], c["attribute"])) for c in fewshot], "key"),
        "caption_heldout200": _accuracy(captions, "task"),
        "subset50": _accuracy(subset, "task"),
    }
    with open(os.path.join(eval_dir, "pytorch_results.json"), "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    print(json.dumps(results, indent=1), flush=True)
    names = write_examples(ref, model_dir)
    print("examples:", ", ".join(names), flush=True)

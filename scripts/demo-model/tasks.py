"""Interleaved image-text sequences for the demo model, built exactly as IdeficsProcessor builds them.

A sequence is a list of items: `Img(scene)` or `Text(prompt, answer)`. A Text item is ONE processor
text piece `prompt + " " + answer`; `answer` (may be "") is what the loss trains. The final item's
answer is followed by </s> (also trained), so greedy generation stops after "answer.".

Prompt formats (the CLI `--prompt` form, `<image>` where each image goes):
  caption        <image>A photo of                                 -> two red circles.
  colour         <image>Question: what colour are the shapes? Answer:  -> red.
  shape          <image>Question: which shape is shown? Answer:        -> circle.
  count          <image>Question: how many shapes are there? Answer:   -> two.
  few-shot       <image>Output: red.<image>Output: green.<image>Output:  -> blue.
                 (no instruction: the examples' answers tell which attribute is asked)
"""
import random
from dataclasses import dataclass

import scenes as S

FAKE, IMAGE = "<fake_token_around_image>", "<image>"
BOS_ID, EOS_ID, PAD_ID = 1, 2, 0

QUESTIONS = {
    "colour": "Question: what colour are the shapes? Answer:",
    "shape": "Question: which shape is shown? Answer:",
    "count": "Question: how many shapes are there? Answer:",
}
# Paraphrases seen in training only (the evaluation uses QUESTIONS).
PARAPHRASES = {
    "colour": ["Question: what colour is the shape? Answer:", "Question: which colour do you see? Answer:"],
    "shape": ["Question: what shape are they? Answer:", "Question: what kind of shape is it? Answer:"],
    "count": ["Question: how many objects are there? Answer:", "Question: count the shapes. Answer:"],
}
CAPTION_PROMPT = "A photo of"
FEWSHOT_PROMPT = "Output:"
TASKS = ["colour", "shape", "count"]


@dataclass
class Img:
    scene: S.Scene


@dataclass
class Text:
    prompt: str
    answer: str = ""

    def piece(self):
        return self.prompt + (" " + self.answer if self.answer else "")


def answer_text(word):
    return word + "."


# ----------------------------------------------------------------------------------------------
# Sequence makers (training and evaluation share them)
# ----------------------------------------------------------------------------------------------
def caption_items(scene):
    return [Img(scene), Text(CAPTION_PROMPT, answer_text(scene.caption()))]


def vqa_items(scene, task, question=None):
    return [Img(scene), Text(question or QUESTIONS[task], answer_text(scene.attribute(task)))]


def fewshot_items(example_scenes, query_scene, task, with_query_answer=True):
    items = []
    for sc in example_scenes:
        items += [Img(sc), Text(FEWSHOT_PROMPT, answer_text(sc.attribute(task)))]
    items += [Img(query_scene), Text(FEWSHOT_PROMPT, answer_text(query_scene.attribute(task)) if with_query_answer else "")]
    return items


def prompt_string(items):
    """The CLI --prompt form: text pieces stripped of spaces, '<image>' per image (answers of the
    last item left out, i.e. what the model must continue)."""
    out = ""
    for i, it in enumerate(items):
        if isinstance(it, Img):
            out += IMAGE
        elif i == len(items) - 1:
            out += it.prompt.strip(" ")
        else:
            out += it.piece().strip(" ")
    return out


# ----------------------------------------------------------------------------------------------
# Tokenization exactly like IdeficsProcessor
# ----------------------------------------------------------------------------------------------
class Encoder:
    """ids / loss targets / image attention mask for item lists, with a `tokenizers.Tokenizer`."""

    def __init__(self, tok):
        self.tok = tok
        self.fake = tok.token_to_id(FAKE)
        self.image = tok.token_to_id(IMAGE)
        self._cache = {}

    def _enc(self, text):
        ids = self._cache.get(text)
        if ids is None:
            ids = self.tok.encode(text, add_special_tokens=False).ids
            self._cache[text] = ids
        return ids

    def encode(self, items, train_answers="all", add_eos=True, drop_last_answer=False):
        """Returns (ids, target_mask, image_index).

        ids: BOS + pieces (processor convention); image_index[t] = index of the latest image at
        or before t (-1 = none), which is what transformers' image_attention_mask_for_packed_input_ids
        gives for sequences without an inner </s>. target_mask[t] = 1 when token t is trained
        (predicted from position t-1). train_answers: "all" (every Text answer) or "last".
        """
        ids, tgt = [BOS_ID], [0]
        last_was_image = False
        n_text = sum(isinstance(it, Text) for it in items)
        k_text = 0
        for i, it in enumerate(items):
            if isinstance(it, Img):
                new = [self.image, self.fake] if last_was_image else [self.fake, self.image, self.fake]
                ids += new
                tgt += [0] * len(new)
                last_was_image = True
                continue
            last_was_image = False
            k_text += 1
            is_last = k_text == n_text
            answer = "" if (drop_last_answer and is_last) else it.answer
            p_ids = self._enc(it.prompt.strip(" "))
            if answer:
                full = self._enc((it.prompt + " " + answer).strip(" "))
                if full[:len(p_ids)] != p_ids:
                    raise AssertionError("prompt tokens are not a prefix: %r" % it.piece())
                trained = train_answers == "all" or is_last
                ids += full
                tgt += [0] * len(p_ids) + [1 if trained else 0] * (len(full) - len(p_ids))
            else:
                ids += p_ids
                tgt += [0] * len(p_ids)
        if add_eos and not drop_last_answer:
            ids.append(EOS_ID)
            tgt.append(1)
        image_index, cur = [], -1
        for t in ids:
            if t == self.image:
                cur += 1
            image_index.append(cur)
        return ids, tgt, image_index


# ----------------------------------------------------------------------------------------------
# Training mixture
# ----------------------------------------------------------------------------------------------
def sample_training_items(rng, size, n_images):
    """One training sequence with exactly n_images images."""
    def scene():
        return S.sample_scene(rng, size)

    if n_images == 1:
        r = rng.random()
        sc = scene()
        if r < 0.2:
            return caption_items(sc)
        if r < 0.75:
            task = rng.choice(TASKS)
            q = rng.choice(PARAPHRASES[task]) if rng.random() < 0.15 else None
            return vqa_items(sc, task, q)
        return fewshot_items([], sc, rng.choice(TASKS))
    if rng.random() < 0.35:
        # interleaved: a caption or a question per image, each about the image just before it
        items = []
        for _ in range(n_images):
            sc = scene()
            if rng.random() < 0.25:
                items += caption_items(sc)
            else:
                items += vqa_items(sc, rng.choice(TASKS))
        return items
    # instruction-free few-shot: all answers name the same attribute
    task = rng.choice(TASKS)
    return fewshot_items([scene() for _ in range(n_images - 1)], scene(), task)

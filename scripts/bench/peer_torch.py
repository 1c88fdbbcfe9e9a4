#!/usr/bin/env python3
"""Peer benchmark: the same checkpoint in PyTorch + transformers (dev-time tool).

    python3 scripts/bench/peer_torch.py MODEL_DIR --prompt-tokens 128 --decode-tokens 16 --threads 2

Loads the IDEFICS checkpoint (weights upcast to float32, as our engine computes), times a prefill
of N tokens with one image and a greedy decode of M tokens with the KV cache, prints JSON."""
import argparse, json, sys, time
sys.modules["torchvision"] = None  # the PyPI build does not load next to the CPU torch
import torch
from transformers import IdeficsForVisionText2Text

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("--prompt-tokens", type=int, default=128)
p.add_argument("--decode-tokens", type=int, default=16)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)
t0 = time.time()
model = IdeficsForVisionText2Text.from_pretrained(a.model, dtype=torch.float32).eval()
load = time.time() - t0
cfg = model.config
image_token = 32001 if cfg.additional_vocab_size >= 2 else cfg.vocab_size - 1
ids = [1] + [100 + (i * 7919) % 30000 for i in range(a.prompt_tokens - 1)]
ids[1] = image_token
input_ids = torch.tensor([ids])
size = cfg.vision_config.image_size
pixels = torch.zeros(1, 1, 3, size, size)
mask = torch.zeros(1, len(ids), 1, dtype=torch.long)
mask[0, 1:, 0] = 1
with torch.no_grad():
    t0 = time.time()
    out = model(input_ids=input_ids, pixel_values=pixels, image_attention_mask=mask, use_cache=True)
    prefill = time.time() - t0
    cache = out.past_key_values if hasattr(out, "past_key_values") else out.cache
    token = out.logits[:, -1:].argmax(-1)
    # As transformers' generate does: later steps reuse the vision output (the resampler reruns).
    vision = model.model.vision_model(pixel_values=pixels[0]).last_hidden_state
    t0 = time.time()
    for _ in range(a.decode_tokens):
        step = model(input_ids=token, image_encoder_embeddings=vision, image_attention_mask=mask[:, -1:],
                     cache=cache, use_cache=True)
        cache = step.past_key_values if hasattr(step, "past_key_values") else step.cache
        token = step.logits[:, -1:].argmax(-1)
    decode = time.time() - t0
print(json.dumps({"peer": f"torch {torch.__version__} transformers", "threads": a.threads, "load_seconds": load,
                  "prefill_tokens_per_second": a.prompt_tokens / prefill,
                  "decode_tokens_per_second": a.decode_tokens / decode}, indent=1))

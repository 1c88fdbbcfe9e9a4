#!/usr/bin/env python3
"""Peer benchmark: the same checkpoint in PyTorch + transformers (dev-time tool, not a test).

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch transformers
    /tmp/ref/bin/python scripts/bench/peer_torch.py MODEL_DIR [--dtype bf16|f32] [--prompt-tokens 128]
        [--decode-tokens 16] [--threads 2] [--no-warmup]

Loads the IDEFICS checkpoint with weights and compute in bf16 (as a user of torch bf16 runs it) or
upcast to f32, and times three phases separately, like `flamingo bench`:
  vision   vision_model + perceiver_resampler for one image (vision_seconds); the gated
           cross-attention K/V projections of the resampled image are timed apart (xattn_kv_seconds),
           since ours computes them once per image inside its vision_seconds, while transformers
           recomputes them inside every forward (prefill and each decode step; it has no K/V cache
           for cross-attention);
  prefill  P tokens (one of them the image token) with the precomputed resampler output passed as
           perceiver_embeddings, so vision does not run inside it; logits of the last position only
           (logits_to_keep=1, as generate() does);
  decode   M greedy tokens with the KV cache (fixed length), reusing the resampler output.
Before the timed run, one untimed warm-up run of all three phases at the same shapes (2 decode
steps) in the same process (oneDNN primitive creation, allocator), unless --no-warmup.
Prints one JSON object on stdout."""
import argparse, json, sys, time
sys.modules["torchvision"] = None  # the PyPI build does not load next to the CPU torch
import torch
import transformers
from transformers import IdeficsForVisionText2Text

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
p.add_argument("--prompt-tokens", type=int, default=128)
p.add_argument("--decode-tokens", type=int, default=16)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--no-warmup", action="store_true")
a = p.parse_args()
torch.set_num_threads(a.threads)
dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[a.dtype]

t0 = time.perf_counter()
model = IdeficsForVisionText2Text.from_pretrained(a.model, dtype=dtype).eval()
load = time.perf_counter() - t0
cfg = model.config
inner = model.model
image_token = 32001 if cfg.additional_vocab_size >= 2 else cfg.vocab_size - 1
ids = [1] + [100 + (i * 7919) % 30000 for i in range(a.prompt_tokens - 1)]
ids[1] = image_token
input_ids = torch.tensor([ids])
size = cfg.vision_config.image_size
# The same pixels as `flamingo bench` (values do not change the work).
pixels = ((torch.arange(3 * size * size) % 255).float() / 255 - 0.5).view(1, 3, size, size).to(dtype)
mask = torch.zeros(1, len(ids), 1, dtype=torch.long)
mask[0, 1:, 0] = 1


def next_cache(out):
    return out.cache if hasattr(out, "cache") else out.past_key_values


def run(decode_tokens):
    """One pass of the three phases; returns their seconds."""
    t0 = time.perf_counter()
    vision = inner.vision_model(pixel_values=pixels).last_hidden_state
    perceived = inner.perceiver_resampler(vision) if cfg.use_resampler else vision
    t1 = time.perf_counter()
    # What ours also does once per image: every gated cross-attention block's K and V projections.
    for block in inner.gated_cross_attn_layers:
        attn = block.cross_attn
        k, v = attn.k_proj(perceived), attn.v_proj(perceived)
        if attn.qk_layer_norms:
            k = attn.k_layer_norm(k.view(*k.shape[:2], attn.num_heads, attn.head_dim))
    t2 = time.perf_counter()
    embeddings = {"perceiver_embeddings": perceived} if cfg.use_resampler else {"image_encoder_embeddings": perceived}
    out = model(input_ids=input_ids, image_attention_mask=mask, use_cache=True, logits_to_keep=1, **embeddings)
    cache = next_cache(out)
    token = out.logits[:, -1:].argmax(-1)
    t3 = time.perf_counter()
    for _ in range(decode_tokens):
        step = model(input_ids=token, image_attention_mask=mask[:, -1:], cache=cache, use_cache=True, **embeddings)
        cache = next_cache(step)
        token = step.logits[:, -1:].argmax(-1)
    t4 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, t4 - t3


with torch.no_grad():
    warmup = None
    if not a.no_warmup:
        t0 = time.perf_counter()
        run(2)
        warmup = time.perf_counter() - t0
    vision, xattn_kv, prefill, decode = run(a.decode_tokens)


def weight_bytes(modules):
    return sum(t.numel() * t.element_size() for m in modules for t in m.parameters())


# Weights read per decoded token: the LM (decoder layers, gated cross-attention blocks, final norm)
# and the LM head, not the embedding table (one row per token), vision or resampler.
decode_bytes = weight_bytes([inner.layers, inner.gated_cross_attn_layers, inner.norm, model.lm_head])
print(json.dumps({
    "peer": f"torch {torch.__version__} transformers {transformers.__version__}", "dtype": a.dtype,
    "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    "load_seconds": load,
    "warmup_seconds": warmup, "attn_implementation": cfg._attn_implementation,
    "parameters_billion": sum(t.numel() for t in model.parameters()) / 1e9,
    "vision_seconds": vision, "xattn_kv_seconds": xattn_kv,
    "prompt_tokens": a.prompt_tokens, "prefill_seconds": prefill,
    "prefill_tokens_per_second": a.prompt_tokens / prefill,
    "decode_tokens": a.decode_tokens, "decode_seconds": decode,
    "decode_tokens_per_second": a.decode_tokens / decode,
    "decode_weight_bytes_per_token": decode_bytes,
    "decode_weight_gb_per_second": decode_bytes * a.decode_tokens / decode / 1e9,
}, indent=1))

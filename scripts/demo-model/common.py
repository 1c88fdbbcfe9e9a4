"""Shared by train-demo and make_eval: model config, pixel preprocessing, batching, torch/transformers import."""
import os
import sys

import numpy as np
import torch

import tasks as T

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from torchvision_compat import import_torchvision  # noqa: E402

IMAGE_SIZE = 48
PATCH_SIZE = 8
IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]   # IdeficsImageProcessor defaults (OpenAI CLIP)
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]

# Model shape (see models/demo/README.md)
MODEL = dict(
    hidden=128, layers=4, inter=320, heads=4, interval=1,
    vis_embed=64, vis_layers=3, vis_heads=4, vis_inter=192,
    latents=8, perc_depth=2, perc_heads=4, perc_head_dim=16,
)


def import_transformers(need_torchvision=False):
    """transformers' IDEFICS image processor defaults to the torchvision backend. The shared env has
    no working torchvision; a private copy (PYTHONPATH=/tmp/refscripts_tv) is a CUDA build, imported
    through scripts/reference/torchvision_compat.py. Without it, block the import so transformers
    uses its PIL backend (identical for images already at image_size, which is all the demo uses)."""
    if import_torchvision() is None:
        if need_torchvision:
            raise SystemExit("torchvision needed: pip install --no-deps --target /tmp/tv torchvision==0.28.0 "
                             "&& export PYTHONPATH=/tmp/tv")
        sys.modules["torchvision"] = None
    import transformers
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    return transformers


def make_config(vocab_size):
    from transformers import IdeficsConfig
    m = MODEL
    return IdeficsConfig(
        vocab_size=vocab_size, additional_vocab_size=2,
        hidden_size=m["hidden"], intermediate_size=m["inter"],
        num_hidden_layers=m["layers"], num_attention_heads=m["heads"],
        cross_layer_interval=m["interval"], qk_layer_norms=False,
        use_resampler=True, tie_word_embeddings=False,
        rms_norm_eps=1e-6, max_position_embeddings=256,
        alpha_initializer="ones", alpha_type="float",
        initializer_range=0.02,
        freeze_text_layers=False, freeze_vision_layers=False, freeze_lm_head=False,
        vision_config=dict(embed_dim=m["vis_embed"], image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
                           num_hidden_layers=m["vis_layers"], num_attention_heads=m["vis_heads"],
                           intermediate_size=m["vis_inter"], hidden_act="gelu"),
        perceiver_config=dict(use_resampler=True, resampler_n_latents=m["latents"],
                              resampler_depth=m["perc_depth"], resampler_n_heads=m["perc_heads"],
                              resampler_head_dim=m["perc_head_dim"], qk_layer_norms_perceiver=False),
        pad_token_id=T.PAD_ID, bos_token_id=T.BOS_ID, eos_token_id=T.EOS_ID,
    )


_MEAN255 = torch.tensor(IMAGE_MEAN, dtype=torch.float32).view(3, 1, 1) * 255
_STD255 = torch.tensor(IMAGE_STD, dtype=torch.float32).view(3, 1, 1) * 255


def pixels(img):
    """PIL RGB image already at IMAGE_SIZE -> float32 [3, S, S], as the torchvision backend:
    rescale and normalize fused, (x - 255 mean) / (255 std)."""
    a = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).to(torch.float32)
    return (a - _MEAN255) / _STD255


def collate(encoded, images):
    """encoded: [(ids, tgt, image_index)], images: [[CHW tensor] * K] (same K for every sequence).
    Right-padded batch: input_ids, attention_mask, image_attention_mask [B, L, K], pixel_values
    [B, K, 3, S, S], targets (next-token ids, -100 where not trained)."""
    B = len(encoded)
    K = len(images[0])
    L = max(len(e[0]) for e in encoded)
    ids = torch.full((B, L), T.PAD_ID, dtype=torch.long)
    att = torch.zeros((B, L), dtype=torch.long)
    iam = torch.zeros((B, L, K), dtype=torch.long)
    labels = torch.full((B, L), -100, dtype=torch.long)
    for b, (i, t, ix) in enumerate(encoded):
        n = len(i)
        ids[b, :n] = torch.tensor(i)
        att[b, :n] = 1
        ix_t = torch.tensor(ix)
        rows = torch.nonzero(ix_t >= 0).flatten()
        iam[b, rows, ix_t[rows]] = 1
        tt = torch.tensor(t)
        # logits at position p predict token p+1
        lab = torch.where(tt[1:] == 1, ids[b, 1:n], torch.full_like(ids[b, 1:n], -100))
        labels[b, :n - 1] = lab
    pv = torch.stack([torch.stack(imgs) for imgs in images])
    return dict(input_ids=ids, attention_mask=att, image_attention_mask=iam, pixel_values=pv), labels

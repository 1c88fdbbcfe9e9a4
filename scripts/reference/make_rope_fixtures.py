"""RoPE inverse frequencies with scaling, from transformers' own ROPE_INIT_FUNCTIONS.

Writes Tests/Fixtures/rope/inv_freq.json: for each case, the config it was computed from and
transformers' inv_freq (float32). RoPEScaling in Sources/FlamingoCore/Kernels/RoPE.swift must
reproduce them. Run: /tmp/ref/bin/python scripts/reference/make_rope_fixtures.py
"""
import json
import pathlib

import torch
import transformers
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

CASES = [
    # name, head_dim, theta, rope_parameters
    ("default", 64, 10000.0, {"rope_type": "default"}),
    ("linear", 64, 10000.0, {"rope_type": "linear", "factor": 4.0}),
    # Llama 3.2 Vision 11B's rope_scaling (head_dim 128, theta 500000).
    ("llama3", 128, 500000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
    ("llama3_small", 32, 10000.0, {"rope_type": "llama3", "factor": 2.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 2.0, "original_max_position_embeddings": 64}),
]

out = {"transformers": transformers.__version__, "torch": torch.__version__, "cases": []}
for name, head_dim, theta, params in CASES:
    config = LlamaConfig(hidden_size=head_dim * 4, num_attention_heads=4, head_dim=head_dim,
                         max_position_embeddings=131072, rope_parameters={"rope_theta": theta, **params})
    rope_type = params["rope_type"]
    if rope_type == "default":
        inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    else:
        inv, scaling = ROPE_INIT_FUNCTIONS[rope_type](config, "cpu")
        assert scaling == 1.0
    out["cases"].append({"name": name, "head_dim": head_dim, "rope_theta": theta, "rope_parameters": params,
                         "inv_freq": [float(x) for x in inv.to(torch.float32)]})

path = pathlib.Path(__file__).resolve().parents[2] / "Tests/Fixtures/rope/inv_freq.json"
path.write_text(json.dumps(out, indent=1) + "\n")
print(f"wrote {path}")

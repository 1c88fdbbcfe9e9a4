#!/usr/bin/env python3
"""Dev-time check of the Swift engine against goldens made by make_model_fixtures.py.

    python3 scripts/reference/make_model_fixtures.py --seed 1234 --out /tmp/unseen
    python3 scripts/reference/check_checkpoint.py /tmp/unseen [.build/release/flamingo]

For every fixture directory with a golden.json, runs `flamingo generate --input-ids ... --image ...
--greedy --json --dump-logits` per case and prints whether the tokens are identical and the max
|logit diff| (tolerance 1e-3)."""
import json, os, subprocess, sys
import numpy as np

root = sys.argv[1]
binary = sys.argv[2] if len(sys.argv) > 2 else ".build/release/flamingo"
failed = False
for name in sorted(os.listdir(root)):
    fx = os.path.join(root, name)
    if not os.path.isfile(os.path.join(fx, "golden.json")):
        continue
    golden = json.load(open(os.path.join(fx, "golden.json")))
    worst, same = 0.0, True
    for case in golden["cases"]:
        cmd = [binary, "generate", "--model", fx, "--input-ids", ",".join(map(str, case["input_ids"])), "--greedy",
               "--json", "--max-tokens", str(len(case["greedy_tokens"])), "--dump-logits", "/tmp/check_checkpoint.npy"]
        for image in case["images"]:
            cmd += ["--image", os.path.normpath(os.path.join(fx, image))]
        out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        diff = float(np.abs(np.load("/tmp/check_checkpoint.npy") - np.load(os.path.join(fx, case["logits_npy"]))).max())
        worst = max(worst, diff)
        same &= out["tokens"] == case["greedy_tokens"]
    ok = same and worst <= 1e-3
    failed |= not ok
    summary = golden["config_summary"]
    print(f"{name}: {len(golden['cases'])} cases, tokens identical: {same}, max |logit diff| {worst:.2e} "
          f"({summary['dtype_on_disk']}, xattn every {summary['cross_layer_interval']}) {'ok' if ok else 'FAIL'}")
sys.exit(1 if failed else 0)

#!/usr/bin/env python3
"""A bounded soak of a running `flamingo serve`: N concurrent openai clients for T seconds.

    soak.py --url http://127.0.0.1:PORT/v1 --pid SERVER_PID --images DIR [--clients 16] [--seconds 60]

Each client loops until the time is up, mixing non-streaming requests, streaming requests, and
streams it abandons after the first content chunk (the server must cancel those sequences).
Loopback only; the loop is bounded by --seconds. Prints one JSON object:
    {"requests", "failures": [...], "by_mode": {...}, "rss_warm_kib", "rss_end_kib", "rss_max_kib",
     "metrics": {"active", "queued", "in_flight"}}
and exits 1 when a request failed.
"""
import argparse
import json
import os
import random
import re
import sys
import threading
import time
import urllib.request

from openai import OpenAI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flamingo_chat import image_part, text_part  # noqa: E402


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def metric(text, name):
    m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--api-key", default="none")
    ap.add_argument("--pid", type=int, required=True, help="the server's process id (for its RSS)")
    ap.add_argument("--images", required=True)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--warmup", type=float, default=5, help="seconds before the RSS baseline is taken")
    args = ap.parse_args()

    images = sorted(os.path.join(args.images, f) for f in os.listdir(args.images)
                    if f.lower().endswith((".png", ".jpg", ".jpeg")))
    parts = [image_part(p) for p in images]
    model = OpenAI(base_url=args.url, api_key=args.api_key, max_retries=0).models.list().data[0].id
    start = time.monotonic()
    deadline = start + args.seconds
    lock = threading.Lock()
    stats = {"requests": 0, "failures": [], "by_mode": {"plain": 0, "stream": 0, "abandon": 0}}
    rss = {"warm": None, "max": 0}

    def client(i):
        rng = random.Random(i)
        own = OpenAI(base_url=args.url, api_key=args.api_key, max_retries=0, timeout=120)
        while time.monotonic() < deadline:
            mode = rng.choice(["plain", "stream", "stream", "abandon"])
            content = [parts[j] for j in rng.sample(range(len(parts)), rng.randint(0, 2))]
            content.append(text_part("Client %d asks about picture %d" % (i, rng.randint(0, 99))))
            request = dict(model=model, messages=[{"role": "user", "content": content}],
                           max_tokens=rng.randint(1, 48), temperature=rng.choice([0, 0.8]), seed=rng.randint(0, 1 << 30))
            try:
                if mode == "plain":
                    r = own.chat.completions.create(**request)
                    assert r.choices[0].finish_reason in ("stop", "length"), r
                elif mode == "stream":
                    chunks = list(own.chat.completions.create(stream=True, **request))
                    assert chunks[-1].choices[0].finish_reason in ("stop", "length"), chunks[-1]
                else:
                    stream = own.chat.completions.create(stream=True, **request)
                    for _ in stream:
                        break
                    stream.close()
                with lock:
                    stats["requests"] += 1
                    stats["by_mode"][mode] += 1
            except Exception as e:  # noqa: BLE001
                with lock:
                    stats["failures"].append("%s: %s: %s" % (mode, type(e).__name__, e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(0.25)
        now_rss = rss_kib(args.pid)
        rss["max"] = max(rss["max"], now_rss)
        if rss["warm"] is None and time.monotonic() - start >= args.warmup:
            rss["warm"] = now_rss
    for t in threads:
        t.join()

    # Abandoned streams are cancelled: nothing stays active or queued.
    base = args.url.rstrip("/").rsplit("/v1", 1)[0]
    text = ""
    for _ in range(50):
        text = urllib.request.urlopen(base + "/metrics", timeout=30).read().decode()
        if metric(text, "flamingo_active_sequences") == 0 and metric(text, "flamingo_http_requests_in_flight") == 0:
            break
        time.sleep(0.1)
    result = dict(stats, rss_warm_kib=rss["warm"], rss_end_kib=rss_kib(args.pid), rss_max_kib=rss["max"],
                  metrics={"active": metric(text, "flamingo_active_sequences"),
                           "queued": metric(text, "flamingo_queue_depth"),
                           "in_flight": metric(text, "flamingo_http_requests_in_flight")})
    json.dump(result, sys.stdout)
    print()
    sys.exit(1 if stats["failures"] else 0)


if __name__ == "__main__":
    main()

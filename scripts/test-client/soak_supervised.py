#!/usr/bin/env python3
"""Soak of `flamingo serve --supervise` with a rank killed midway (issue 14's soak).

    soak_supervised.py --url http://127.0.0.1:PORT --marker UUID --image PNG
                       [--clients 32] [--seconds 600] [--kill-rank 2] [--max-body 1048576]

N client threads loop until the time is up, each request one of: valid (non-streamed), stream
(read to [DONE]), image (a data-URL PNG), invalid (malformed JSON or empty messages: 400),
oversized (a body over --max-body: 413), disconnect (a stream closed after its first chunk).
At half time the rank --kill-rank of the supervised pipeline gets SIGKILL (its processes are
found by FLAMINGO_SOAK_MARKER=UUID in their environment). Outcomes are counted per mode; a failure
of a request that was in flight or sent between the kill and the service being back (/health 200)
plus 2 s counts as "during restart" (expected: 503, an error event, a cut connection); any other
non-expected outcome is "unexpected". The RSS of every marked process is sampled every 5 s.
Prints one JSON report and exits 1 when anything was unexpected. Loopback only.
"""
import argparse
import base64
import http.client
import json
import os
import random
import signal
import socket
import sys
import threading
import time
import urllib.parse


def marked(marker):
    """[(pid, rank, name)] of processes whose environment has FLAMINGO_SOAK_MARKER=marker."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % entry, "rb") as f:
                env = f.read().split(b"\0")
            with open("/proc/%s/comm" % entry) as f:
                name = f.read().strip()
        except OSError:
            continue
        if ("FLAMINGO_SOAK_MARKER=%s" % marker).encode() not in env:
            continue
        rank = next((int(v.split(b"=")[1]) for v in env if v.startswith(b"OMPI_COMM_WORLD_RANK=")), -1)
        out.append((int(entry), rank, name))
    return out


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Soak:
    def __init__(self, args):
        self.args = args
        u = urllib.parse.urlparse(args.url)
        self.host, self.port = u.hostname, u.port
        with open(args.image, "rb") as f:
            self.image_url = "data:image/png;base64," + base64.b64encode(f.read()).decode()
        self.lock = threading.Lock()
        self.counts = {}
        self.unexpected = []
        self.kill_at = None
        self.back_at = None
        self.stop_at = time.time() + args.seconds
        self.latency = []

    def count(self, mode, outcome):
        with self.lock:
            self.counts.setdefault(mode, {}).setdefault(outcome, 0)
            self.counts[mode][outcome] += 1

    def in_restart(self, started):
        with self.lock:
            if self.kill_at is None:
                return False
            end = (self.back_at + 2) if self.back_at else float("inf")
            return self.kill_at - 120 < started and started < end and time.time() > self.kill_at

    def request(self, body, stream=False, close_after_first=False, timeout=120):
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        c.request("POST", "/v1/chat/completions", body=data, headers={"Content-Type": "application/json"})
        sock = c.sock
        r = c.getresponse()
        if not stream or r.status != 200:
            text = r.read()
            c.close()
            return r.status, text
        chunks, error, done = 0, None, False
        while True:
            line = r.fp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data: "):
                continue
            payload = line[6:]
            if payload == b"[DONE]":
                done = True
                break
            event = json.loads(payload)
            if "error" in event:
                error = event["error"]
                continue
            chunks += 1
            if close_after_first:
                sock.shutdown(socket.SHUT_RDWR)
                c.close()
                return 200, b"abandoned"
        c.close()
        if error:
            return 200, ("error event: %s" % error.get("message", "")).encode()
        return 200, b"done" if done else b"cut"

    def one(self, rng):
        mode = rng.choice(["valid", "valid", "stream", "stream", "image", "invalid", "oversized", "disconnect"])
        started = time.time()
        max_tokens = rng.randint(1, 24)
        text = {"role": "user", "content": "Question: how many shapes are there? Answer:"}
        try:
            if mode == "valid":
                status, body = self.request({"messages": [text], "max_tokens": max_tokens, "temperature": 0})
                ok = status == 200 and b'"chat.completion"' in body
            elif mode == "image":
                msg = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": self.image_url}},
                                                   {"type": "text", "text": "Question: what colour are the shapes? Answer:"}]}
                status, body = self.request({"messages": [msg], "max_tokens": max_tokens, "temperature": 0})
                ok = status == 200 and b'"chat.completion"' in body
            elif mode == "stream":
                status, body = self.request({"messages": [text], "max_tokens": max_tokens, "stream": True}, stream=True)
                ok = status == 200 and body == b"done"
            elif mode == "disconnect":
                status, body = self.request({"messages": [text], "max_tokens": 24, "stream": True}, stream=True,
                                            close_after_first=True)
                ok = status == 200 and body in (b"abandoned", b"done")
            elif mode == "invalid":
                bad = rng.choice([b"{not json", json.dumps({"messages": []}).encode(),
                                  json.dumps({"messages": [text], "max_tokens": -1}).encode()])
                status, body = self.request(bad)
                ok = status == 400
            else:
                big = json.dumps({"messages": [{"role": "user", "content": "x" * (self.args.max_body + 1000)}]}).encode()
                status, body = self.request(big, timeout=30)
                ok = status == 413
            outcome = "ok" if ok else "status %d: %s" % (status, body[:120].decode(errors="replace"))
        except Exception as e:  # noqa: BLE001 - every failure is counted
            ok, outcome = False, "%s: %s" % (type(e).__name__, str(e)[:120])
        took = time.time() - started
        if ok:
            self.count(mode, "ok")
            with self.lock:
                self.latency.append(took)
        elif self.in_restart(started):
            self.count(mode, "during restart")
        else:
            self.count(mode, "unexpected")
            with self.lock:
                self.unexpected.append({"mode": mode, "outcome": outcome, "at": round(started - (self.stop_at - self.args.seconds), 1)})

    def client(self, seed):
        rng = random.Random(seed)
        while time.time() < self.stop_at:
            self.one(rng)

    def health(self):
        try:
            c = http.client.HTTPConnection(self.host, self.port, timeout=5)
            c.request("GET", "/health")
            r = c.getresponse()
            r.read()
            return r.status
        except OSError:
            return 0

    def run(self):
        start = time.time()
        samples = {}  # pid -> [(t, rank, kib)]
        threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(self.args.clients)]
        for t in threads:
            t.start()
        killed = None
        next_sample = 0
        while time.time() < self.stop_at:
            now = time.time() - start
            if now >= next_sample:
                for pid, rank, name in marked(self.args.marker):
                    kib = rss_kib(pid)
                    if kib is not None:
                        samples.setdefault(pid, []).append((round(now, 1), rank, name, kib))
                next_sample = now + 5
            if killed is None and now >= self.args.seconds / 2:
                victim = [p for p, r, _ in marked(self.args.marker) if r == self.args.kill_rank]
                with self.lock:
                    self.kill_at = time.time()
                for p in victim:
                    os.kill(p, signal.SIGKILL)
                killed = {"rank": self.args.kill_rank, "pids": victim, "at": round(now, 1)}
                time.sleep(0.5)
            if killed is not None and self.back_at is None and self.health() == 200:
                with self.lock:
                    self.back_at = time.time()
                killed["back_after_s"] = round(self.back_at - self.kill_at, 2)
            time.sleep(0.2)
        for t in threads:
            t.join(timeout=150)
        rss = []
        for pid, series in sorted(samples.items()):
            rank, name = series[0][1], series[0][2]
            life = series[-1][0] - series[0][0]
            # Warm: the first sample a quarter of the process's sampled life in (at most 60 s); end: the last.
            warm = next((s for s in series if s[0] - series[0][0] >= min(60, life / 4)), series[0])
            end = series[-1]
            growth = (end[3] - warm[3]) / warm[3] if warm[3] else 0
            step = max(1, len(series) // 8)
            rss.append({"pid": pid, "rank": rank, "name": name, "sampled_s": round(life, 1), "warm_kib": warm[3],
                        "end_kib": end[3], "max_kib": max(s[3] for s in series), "growth": round(growth, 4),
                        "series_kib": [[s[0], s[3]] for s in series[::step]]})
        unexpected = sum(v.get("unexpected", 0) for v in self.counts.values())
        flat = all(abs(r["growth"]) <= 0.05 for r in rss if r["sampled_s"] >= 60 and r["rank"] >= 0)
        report = {"seconds": self.args.seconds, "clients": self.args.clients, "counts": self.counts,
                  "unexpected": unexpected, "unexpected_examples": self.unexpected[:10], "kill": killed,
                  "rss": rss, "rss_flat_within_5_percent": flat,
                  "requests_ok": sum(v.get("ok", 0) for v in self.counts.values()),
                  "median_ok_latency_s": round(sorted(self.latency)[len(self.latency) // 2], 3) if self.latency else None}
        print(json.dumps(report, indent=1))
        return 0 if unexpected == 0 and flat and killed and killed.get("back_after_s") is not None else 1


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--marker", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--kill-rank", type=int, default=2)
    p.add_argument("--max-body", type=int, default=1 << 20)
    sys.exit(Soak(p.parse_args()).run())


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Body limits, Expect: 100-continue and idle connections of a running `flamingo serve`.

    limits.py --url http://127.0.0.1:PORT/v1 --api-key KEY --image PNG --idle-timeout SECONDS
              [--max-body-size BYTES] [--idle-connections 1000]

The server must run with that API key, --max-body-size (default 32 MiB) and --idle-timeout, and
answer the image's question (models/demo with --chat-template plain). Prints one JSON object:
    {"checks": [{"name", "ok", "detail"}...], "measurements": {...}}
and exits 1 when a check failed. Measurements are seconds: time to the 413 per client, and when the
idle connections were closed (from their connect).

  - A body twice the limit from urllib, requests, httpx and the openai client (none sends
    `Expect: 100-continue`, so each is still sending when the server has answered): each must read
    the 413 and OpenAI's error JSON within 5 s, not a reset and not its own 60 s timeout.
  - A chunked body past the limit (http.client): 413 within 5 s.
  - A body within the limit sent without the API key: 401 within 5 s (answered unread, like a 413).
  - curl (which sends `Expect: 100-continue` for bodies over 1 KiB, 8.x over 1 MiB) without
    `-H 'Expect:'`: a large body gets 413 without a 100; the README's example gets its answer; a
    2 MiB body gets 100, then 200 and the answer.
  - Raw sockets: `Expect: 100-continue` with a declared size within the limit gets
    `100 Continue` before the body is sent, then 200; over the limit it gets the 413 at once and
    then end of stream, without sending the body.
  - `--idle-connections` connections that send nothing (half of them) or only headers (the
    others): a request made meanwhile is answered, and every one of them is closed by the
    server after the idle timeout.
  - The server answers after all that.
"""
import argparse
import base64
import http.client
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import httpx
import openai
import requests
from openai import OpenAI

checks = []
measurements = {}
QUESTION = "Question: how many shapes are there? Answer:"


def check(name, ok, detail=""):
    checks.append({"name": name, "ok": bool(ok), "detail": detail if isinstance(detail, str) else repr(detail)})
    return ok


def error_json_ok(payload, code):
    """OpenAI's error JSON with `code`."""
    try:
        error = json.loads(payload)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return error.get("code") == code and isinstance(error.get("message"), str) and "type" in error


def chat_body(image_url, question=QUESTION, max_tokens=8):
    return json.dumps({"model": "demo", "max_tokens": max_tokens, "temperature": 0, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                     {"type": "text", "text": question}]}]})


def timed(name, send, status, code, bound=5.0):
    """`send()` returns (status, body bytes); it must give `status` with error `code` within `bound` s."""
    start = time.monotonic()
    try:
        got, payload = send()
    except Exception as e:  # a reset, a broken pipe, a timeout: the failure this guards against
        seconds = time.monotonic() - start
        measurements[name] = round(seconds, 3)
        return check(name, False, "%s after %.2f s: %r" % (type(e).__name__, seconds, e))
    seconds = time.monotonic() - start
    measurements[name] = round(seconds, 3)
    return check(name, got == status and error_json_ok(payload, code) and seconds < bound,
                 "status %s after %.3f s: %r" % (got, seconds, payload[:200]))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--idle-timeout", type=float, required=True)
    parser.add_argument("--max-body-size", type=int, default=32 << 20)
    parser.add_argument("--idle-connections", type=int, default=1000)
    args = parser.parse_args()
    base = args.url.rstrip("/")
    chat = base + "/chat/completions"
    host, port = base.split("//", 1)[1].split("/", 1)[0].split(":")
    port = int(port)
    auth = {"Authorization": "Bearer " + args.api_key, "Content-Type": "application/json"}
    with open(args.image, "rb") as f:
        image = "data:image/png;base64," + base64.b64encode(f.read()).decode()

    # Twice the limit, as a JSON chat request with a huge (random) image.
    huge_url = "data:image/png;base64," + base64.b64encode(os.urandom(args.max_body_size * 3 // 2)).decode()
    huge = chat_body(huge_url).encode()
    measurements["oversized_body_bytes"] = len(huge)

    def with_urllib():
        request = urllib.request.Request(chat, data=huge, method="POST", headers=auth)
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def with_requests():
        r = requests.post(chat, data=huge, headers=auth, timeout=60)
        return r.status_code, r.content

    def with_httpx():
        r = httpx.post(chat, content=huge, headers=auth, timeout=60)
        return r.status_code, r.content

    def with_openai():
        client = OpenAI(base_url=base, api_key=args.api_key, timeout=60)
        try:
            client.chat.completions.create(model="demo", max_tokens=8, temperature=0, messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": huge_url}},
                                             {"type": "text", "text": QUESTION}]}])
        except openai.APIStatusError as e:
            return e.status_code, e.response.content
        return 200, b""

    for name, send in [("urllib", with_urllib), ("requests", with_requests), ("httpx", with_httpx),
                       ("openai", with_openai)]:
        timed("413_" + name, send, 413, "request_too_large")

    def chunked():
        connection = http.client.HTTPConnection(host, port, timeout=60)
        piece = b"x" * (1 << 20)
        count = args.max_body_size // len(piece) + 8

        def pieces():
            yield b'{"messages": [{"role": "user", "content": "'
            for _ in range(count):
                yield piece
            yield b'"}]}'
        connection.request("POST", "/v1/chat/completions", body=pieces(), headers=auth, encode_chunked=True)
        r = connection.getresponse()
        return r.status, r.read()
    timed("413_chunked", chunked, 413, "request_too_large")

    # Within the limit but refused before it is read: the same predicament for the client.
    unread = chat_body("data:image/png;base64," + "A" * (args.max_body_size // 2)).encode()

    def unauthorised():
        request = urllib.request.Request(chat, data=unread, method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
    timed("401_unread_body_urllib", unauthorised, 401, "missing_api_key")

    curl_checks(chat, huge, image, args.api_key)
    expect_checks(host, port, args.api_key, image)
    idle_checks(host, port, base, args.api_key, image, args.idle_timeout, args.idle_connections)

    # Still serving.
    client = OpenAI(base_url=base, api_key=args.api_key, timeout=60, max_retries=0)
    r = client.chat.completions.create(model="demo", max_tokens=8, temperature=0, messages=[
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": QUESTION}]}])
    check("serves_afterwards", bool(r.choices[0].message.content), repr(r.choices[0].message.content))

    print(json.dumps({"checks": checks, "measurements": measurements}))
    return 0 if all(c["ok"] for c in checks) else 1


def curl_checks(chat, huge, image, key):
    """curl as users run it: no `-H 'Expect:'`."""
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        f.write(huge)
        f.flush()
        start = time.monotonic()
        r = subprocess.run(["curl", "-sS", "-v", "-o", "-", "-H", "Authorization: Bearer " + key,
                            "-H", "Content-Type: application/json", "--max-time", "60", chat, "--data-binary", "@" + f.name],
                           capture_output=True, timeout=90)
        seconds = time.monotonic() - start
    measurements["413_curl"] = round(seconds, 3)
    err = r.stderr.decode(errors="replace")
    check("413_curl", r.returncode == 0 and "< HTTP/1.1 413" in err and "100 Continue" not in err
          and error_json_ok(r.stdout, "request_too_large") and seconds < 5,
          "exit %d after %.3f s: %s %s" % (r.returncode, seconds, r.stdout[:200], err[-600:]))

    # The README's example as its text has it (the body inline).
    start = time.monotonic()
    r = subprocess.run(["curl", "-sS", "-H", "Authorization: Bearer " + key, "-H", "Content-Type: application/json",
                        "--max-time", "60", chat, "-d", chat_body(image)], capture_output=True, timeout=90)
    measurements["200_curl_readme"] = round(time.monotonic() - start, 3)
    content = answer(r.stdout)
    check("curl_readme_example", r.returncode == 0 and bool(content), "exit %d: %s %s" % (r.returncode, r.stdout[:300], r.stderr[-300:]))

    # A body within the limit that is large enough for curl to ask `Expect: 100-continue` (curl
    # asks above 1 KiB, 8.x above 1 MiB): JSON padded with 2 MiB of spaces.
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        f.write(chat_body(image).encode() + b" " * (2 << 20))
        f.flush()
        start = time.monotonic()
        r = subprocess.run(["curl", "-sS", "-v", "-H", "Authorization: Bearer " + key, "-H", "Content-Type: application/json",
                            "--max-time", "60", chat, "--data-binary", "@" + f.name], capture_output=True, timeout=90)
        seconds = time.monotonic() - start
    measurements["200_curl_expect"] = round(seconds, 3)
    err = r.stderr.decode(errors="replace")
    content = answer(r.stdout)
    check("curl_expect_100_then_200", r.returncode == 0 and "> Expect: 100-continue" in err
          and "< HTTP/1.1 100 Continue" in err and "< HTTP/1.1 200" in err and bool(content),
          "exit %d after %.3f s: %s %s" % (r.returncode, seconds, r.stdout[:300], err[-800:]))


def answer(payload):
    """The completion's text, or None."""
    try:
        return json.loads(payload)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def read_head(sock, deadline):
    """Bytes up to the end of the first response head (or what came before end of stream)."""
    data = b""
    while b"\r\n\r\n" not in data and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    return data


def read_to_end(sock, deadline):
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return data, False
        if not chunk:
            return data, True
        data += chunk
    return data, False


def expect_checks(host, port, key, image):
    body = chat_body(image).encode()
    head = ("POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
            "Expect: 100-continue\r\nConnection: close\r\nContent-Length: %d\r\n\r\n")
    with socket.create_connection((host, port), timeout=60) as s:
        start = time.monotonic()
        s.sendall((head % (host, key, len(body))).encode())
        interim = read_head(s, start + 5)
        measurements["100_continue"] = round(time.monotonic() - start, 3)
        ok = interim.startswith(b"HTTP/1.1 100 Continue\r\n")
        s.sendall(body)
        rest, ended = read_to_end(s, time.monotonic() + 60)
        final = (interim.split(b"\r\n\r\n", 1)[1] if ok else interim) + rest
        status = final.split(b" ", 2)[1] if final.startswith(b"HTTP/1.1 ") else b"?"
        content = answer(final.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in final else b"")
        check("expect_100_then_200", ok and status == b"200" and bool(content), "interim %r, then %r" % (interim[:100], final[:300]))

    with socket.create_connection((host, port), timeout=60) as s:
        start = time.monotonic()
        s.sendall((head % (host, key, 64 << 20)).encode())  # and no body
        response, ended = read_to_end(s, start + 5)
        seconds = time.monotonic() - start
        measurements["413_expect_no_body"] = round(seconds, 3)
        payload = response.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in response else b""
        check("expect_413_without_body", response.startswith(b"HTTP/1.1 413") and b"100 Continue" not in response
              and b"connection: close" in response.lower() and error_json_ok(payload, "request_too_large") and ended,
              "after %.3f s (end of stream: %s): %r" % (seconds, ended, response[:300]))


def idle_checks(host, port, base, key, image, idle_timeout, count):
    """`count` connections: half send nothing, half send headers and stall. All must be closed."""
    selector = selectors.DefaultSelector()
    opened = {}
    stall = ("POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
             "Content-Length: 100\r\n\r\n" % (host, key)).encode()
    failed = 0
    for i in range(count):
        try:
            s = socket.create_connection((host, port), timeout=10)
        except OSError:
            failed += 1
            continue
        if i % 2:
            s.sendall(stall)
        s.setblocking(False)
        opened[s] = time.monotonic()
        selector.register(s, selectors.EVENT_READ)
    measurements["idle_connections_opened"] = len(opened)
    check("idle_connections_opened", failed == 0, "%d of %d connections failed" % (failed, count))

    # Another client is served meanwhile.
    start = time.monotonic()
    client = OpenAI(base_url=base, api_key=key, timeout=60, max_retries=0)
    try:
        r = client.chat.completions.create(model="demo", max_tokens=8, temperature=0, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}},
                                         {"type": "text", "text": QUESTION}]}])
        served, detail = bool(r.choices[0].message.content), repr(r.choices[0].message.content)
    except Exception as e:
        served, detail = False, repr(e)
    measurements["request_beside_idle_connections"] = round(time.monotonic() - start, 3)
    check("served_beside_idle_connections", served, detail)

    # Every idle connection is closed by the server (end of stream or reset) after the timeout.
    closed_after = []
    deadline = time.monotonic() + idle_timeout + 15
    while opened and time.monotonic() < deadline:
        for key_, _ in selector.select(timeout=0.5):
            s = key_.fileobj
            try:
                data = s.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if data:
                continue  # a response before the close is allowed; wait for the close itself
            closed_after.append(time.monotonic() - opened.pop(s))
            selector.unregister(s)
            s.close()
    for s in opened:
        s.close()
    measurements["idle_timeout"] = idle_timeout
    measurements["idle_closed"] = len(closed_after)
    measurements["idle_still_open"] = len(opened)
    if closed_after:
        measurements["idle_closed_after_min"] = round(min(closed_after), 3)
        measurements["idle_closed_after_median"] = round(statistics.median(closed_after), 3)
        measurements["idle_closed_after_max"] = round(max(closed_after), 3)
    check("idle_connections_closed", not opened and len(closed_after) == count - failed,
          "%d closed, %d still open %.0f s past the timeout" % (len(closed_after), len(opened), 15))
    # Closed by the idle timeout, not by something sooner (a close cannot come before its timer).
    check("idle_closed_after_the_timeout", closed_after and min(closed_after) >= idle_timeout * 0.9,
          "earliest close after %.3f s" % (min(closed_after) if closed_after else -1))


if __name__ == "__main__":
    sys.exit(main())

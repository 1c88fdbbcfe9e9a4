#!/usr/bin/env python3
"""End-to-end checks of a running `flamingo serve`, with the official openai client.

    e2e.py --url http://127.0.0.1:PORT/v1 --api-key KEY --images DIR [--suite main|queue]

Prints one JSON object on stdout:
    {"checks": [{"name", "ok", "detail"}...],
     "greedy": [{"name", "prompt", "images", "max_tokens", "text", "finish_reason", "completion_tokens"}...]}
and exits 1 when a check failed. The "greedy" records are answers at temperature 0 together with
the prompt the server renders for them: the caller compares each with `flamingo generate --prompt`.

Suites:
  main   non-streaming, streaming (with usage), two images in one message, several turns,
         8 concurrent clients, and every error case (the server must run with --max-images 4
         and --max-body-size 2MiB --max-completion-tokens 64).
  queue  16 concurrent requests against a server started with --max-queue 0: some must be
         refused with 429 (code queue_full), the others must succeed.
"""
import argparse
import base64
import concurrent.futures
import json
import os
import sys
import urllib.error
import urllib.request

import openai
from openai import OpenAI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flamingo_chat import image_part_with_path, render, text_part, wire  # noqa: E402

checks = []
greedy = []


def check(name, ok, detail=""):
    checks.append({"name": name, "ok": bool(ok), "detail": detail if isinstance(detail, str) else repr(detail)})
    return ok


def ask(client, model, messages, max_tokens, name=None, **extra):
    """A greedy non-streaming answer; recorded for the comparison with `flamingo generate`."""
    r = client.chat.completions.create(model=model, messages=wire(messages), max_tokens=max_tokens,
                                       temperature=0, **extra)
    choice = r.choices[0]
    if name:
        prompt, images = render(messages)
        greedy.append({"name": name, "prompt": prompt, "images": images, "max_tokens": max_tokens,
                       "text": choice.message.content, "finish_reason": choice.finish_reason,
                       "completion_tokens": r.usage.completion_tokens, "prompt_tokens": r.usage.prompt_tokens})
    return r


def raw(url, method="POST", body=None, headers=None):
    """(status, parsed JSON or text) without the openai client (for bodies it cannot send)."""
    data = body if isinstance(body, (bytes, type(None))) else body.encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, payload = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, payload = e.code, e.read()
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload.decode(errors="replace")


def expect_api_error(name, call, status, code, param=None, exception=openai.APIStatusError):
    """`call` must fail with an HTTP `status` and OpenAI error JSON carrying `code` (and `param`)."""
    try:
        call()
    except exception as e:
        body = e.body if isinstance(e.body, dict) else {}
        error = body.get("error", body)  # the client unwraps {"error": ...} for some versions
        ok = e.status_code == status and error.get("code") == code and (param is None or error.get("param") == param)
        ok = ok and isinstance(error.get("message"), str) and "type" in error
        return check(name, ok, "status %s body %s" % (e.status_code, e.body))
    except Exception as e:  # noqa: BLE001
        return check(name, False, "unexpected %s: %s" % (type(e).__name__, e))
    return check(name, False, "succeeded, expected HTTP %d %s" % (status, code))


def expect_raw_error(name, status_and_body, status, code, param=None):
    got, body = status_and_body
    error = body.get("error", {}) if isinstance(body, dict) else {}
    ok = got == status and error.get("code") == code and (param is None or error.get("param") == param)
    ok = ok and set(error) >= {"message", "type", "param", "code"}
    return check(name, ok, "status %s body %s" % (got, body))


def main_suite(args, client, model, images):
    one = [{"role": "user", "content": [image_part_with_path(images[0]), text_part("A photo of")]}]

    # Non-streaming.
    r = ask(client, model, one, 12, name="one_image")
    c = r.choices[0]
    check("non_streaming_shape",
          r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == model and r.created > 0
          and c.index == 0 and c.message.role == "assistant" and isinstance(c.message.content, str)
          and c.finish_reason in ("stop", "length")
          and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens,
          r.model_dump_json())
    check("non_streaming_length", c.finish_reason == "stop" or r.usage.completion_tokens == 12, r.model_dump_json())

    # Streaming, with usage: role first, content deltas, a finish chunk, a usage chunk, [DONE].
    chunks = list(client.chat.completions.create(model=model, messages=wire(one), max_tokens=12, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    with_choices = [ch for ch in chunks if ch.choices]
    check("streaming_shape",
          len(chunks) >= 3 and all(ch.object == "chat.completion.chunk" and ch.id == chunks[0].id for ch in chunks)
          and with_choices[0].choices[0].delta.role == "assistant"
          and with_choices[-1].choices[0].finish_reason == c.finish_reason
          and all(ch.choices[0].finish_reason is None for ch in with_choices[:-1])
          and not chunks[-1].choices and chunks[-1].usage is not None
          and chunks[-1].usage.completion_tokens == r.usage.completion_tokens
          and all(ch.usage is None for ch in chunks[:-1]),
          [ch.model_dump() for ch in chunks])
    check("streaming_equals_non_streaming", text == c.message.content, "%r vs %r" % (text, c.message.content))

    # Two images in one message; several turns with a system message.
    two = [{"role": "user", "content": [text_part("Compare"), image_part_with_path(images[0]), text_part("and"),
                                        image_part_with_path(images[1]), text_part("please.")]}]
    ask(client, model, two, 10, name="two_images")
    turns = [{"role": "system", "content": "You describe pictures."},
             {"role": "user", "content": [image_part_with_path(images[2]), text_part("What is it?")]},
             {"role": "assistant", "content": "A picture."},
             {"role": "user", "content": [text_part("And this one?"), image_part_with_path(images[1])]}]
    ask(client, model, turns, 10, name="turns")

    # Stop sequences: the text ends before the first one, finish_reason "stop".
    full = c.message.content
    if len(full) >= 4:
        stop = full[2:4]
        s = client.chat.completions.create(model=model, messages=wire(one), max_tokens=12, temperature=0, stop=[stop])
        cut = full[:full.index(stop)]
        check("stop_sequence", s.choices[0].message.content == cut and s.choices[0].finish_reason == "stop",
              "%r stop %r -> %r" % (full, stop, s.choices[0].message.content))

    # 8 concurrent clients, each its own prompt: answers equal the same prompts asked one at a time.
    prompts = [[{"role": "user", "content": [image_part_with_path(images[i % len(images)]),
                                             text_part("Picture number %d shows" % i)]}] for i in range(8)]
    alone = [ask(client, model, p, 8, name="concurrent_%d" % i).choices[0].message.content for i, p in enumerate(prompts)]

    def one_client(i):
        own = OpenAI(base_url=args.url, api_key=args.api_key, max_retries=0, timeout=120)
        if i % 2:
            parts = own.chat.completions.create(model=model, messages=wire(prompts[i]), max_tokens=8, temperature=0,
                                                stream=True)
            return "".join(ch.choices[0].delta.content or "" for ch in parts if ch.choices)
        return own.chat.completions.create(model=model, messages=wire(prompts[i]), max_tokens=8,
                                           temperature=0).choices[0].message.content

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        together = list(pool.map(one_client, range(8)))
    check("eight_concurrent_clients", together == alone, "%r vs %r" % (together, alone))

    # Errors, in OpenAI's error JSON with the right status.
    base = args.url.rstrip("/")
    auth = {"Authorization": "Bearer " + args.api_key, "Content-Type": "application/json"}
    msg = [{"role": "user", "content": "Hi"}]
    expect_raw_error("malformed_json", raw(base + "/chat/completions", body="{not json", headers=auth), 400, "invalid_json")
    expect_raw_error("missing_messages", raw(base + "/chat/completions", body=json.dumps({"model": model}), headers=auth),
                     400, "missing_required_parameter", "messages")
    expect_raw_error("wrong_type_messages",
                     raw(base + "/chat/completions", body=json.dumps({"model": model, "messages": "hi"}), headers=auth),
                     400, "invalid_type", "messages")
    expect_raw_error("wrong_type_temperature",
                     raw(base + "/chat/completions", body=json.dumps({"model": model, "messages": msg, "temperature": "hot"}),
                         headers=auth), 400, "invalid_type", "temperature")
    expect_raw_error("missing_api_key",
                     raw(base + "/chat/completions", body=json.dumps({"model": model, "messages": msg}),
                         headers={"Content-Type": "application/json"}), 401, "missing_api_key")
    wrong = OpenAI(base_url=args.url, api_key="not-the-key", max_retries=0)
    expect_api_error("wrong_api_key", lambda: wrong.chat.completions.create(model=model, messages=msg),
                     401, "invalid_api_key", exception=openai.AuthenticationError)
    expect_api_error("unknown_model", lambda: client.chat.completions.create(model="gpt-4o", messages=msg),
                     404, "model_not_found", "model", exception=openai.NotFoundError)
    expect_api_error("max_tokens_too_large",
                     lambda: client.chat.completions.create(model=model, messages=msg, max_tokens=100000),
                     400, "invalid_value", "max_tokens", exception=openai.BadRequestError)

    def with_image_url(url):
        return lambda: client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                                text_part("x")]}])
    param = "messages[0].content[0].image_url.url"
    expect_api_error("bad_base64", with_image_url("data:image/png;base64,***not base64***"), 400, "invalid_base64", param,
                     exception=openai.BadRequestError)
    expect_api_error("not_an_image",
                     with_image_url("data:image/png;base64," + base64.b64encode(b"just some text").decode()),
                     400, "invalid_image", param, exception=openai.BadRequestError)
    five = [{"role": "user", "content": [image_part_with_path(images[0]) for _ in range(5)] + [text_part("x")]}]
    expect_api_error("too_many_images", lambda: client.chat.completions.create(model=model, messages=wire(five)),
                     400, "too_many_images", "messages", exception=openai.BadRequestError)
    huge = "data:image/png;base64," + base64.b64encode(os.urandom(3 << 20)).decode()
    expect_api_error("body_too_large", with_image_url(huge), 413, "request_too_large")

    # The server still answers after all that.
    check("healthy_after_errors", raw(base.rsplit("/v1", 1)[0] + "/health", method="GET")[0] == 200)


def queue_suite(args, client, model, images):
    msg = [{"role": "user", "content": [image_part_with_path(images[0]), text_part("A photo of")]}]

    def one(i):
        own = OpenAI(base_url=args.url, api_key=args.api_key, max_retries=0, timeout=120)
        try:
            own.chat.completions.create(model=model, messages=wire(msg), max_tokens=32, temperature=0)
            return "ok"
        except openai.RateLimitError as e:
            error = e.body.get("error", e.body) if isinstance(e.body, dict) else {}
            return "429:" + str(error.get("code"))
        except Exception as e:  # noqa: BLE001
            return "error:%s" % e

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(16)))
    check("queue_full_is_429", "429:queue_full" in results and all(r in ("ok", "429:queue_full") for r in results), results)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8080/v1")
    ap.add_argument("--api-key", default="none")
    ap.add_argument("--images", required=True, help="a folder of PNG/JPEG files (at least 3)")
    ap.add_argument("--suite", choices=["main", "queue"], default="main")
    args = ap.parse_args()

    images = sorted(os.path.join(args.images, f) for f in os.listdir(args.images)
                    if f.lower().endswith((".png", ".jpg", ".jpeg")))
    client = OpenAI(base_url=args.url, api_key=args.api_key, max_retries=0, timeout=120)
    models = client.models.list().data
    check("models_list", len(models) == 1 and models[0].object == "model", [m.model_dump() for m in models])
    model = models[0].id
    try:
        (main_suite if args.suite == "main" else queue_suite)(args, client, model, images)
    except Exception as e:  # noqa: BLE001
        check("no_exception", False, "%s: %s" % (type(e).__name__, e))
    json.dump({"checks": checks, "greedy": greedy}, sys.stdout)
    print()
    sys.exit(0 if all(c["ok"] for c in checks) else 1)


if __name__ == "__main__":
    main()

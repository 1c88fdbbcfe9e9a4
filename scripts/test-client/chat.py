#!/usr/bin/env python3
"""Ask a served Flamingo model a question about images, with the official openai client.

    pip install openai
    flamingo serve --model DIR &
    scripts/test-client/chat.py --image cat.png --image dog.jpg "What differs between these?"

Several questions are asked one after another (the same images with each); one answer per line.

Environment: FLAMINGO_URL (default http://127.0.0.1:8080/v1), FLAMINGO_API_KEY.
"""
import argparse
import os
import sys

from openai import OpenAI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flamingo_chat import image_part, text_part  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("question", nargs="+")
    ap.add_argument("--image", action="append", default=[], help="PNG or JPEG file, repeatable; images come first")
    ap.add_argument("--url", default=os.environ.get("FLAMINGO_URL", "http://127.0.0.1:8080/v1"))
    ap.add_argument("--model", help="model id (default: the first of /v1/models)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--no-stream", action="store_true")
    args = ap.parse_args()

    client = OpenAI(base_url=args.url, api_key=os.environ.get("FLAMINGO_API_KEY", "none"))
    model = args.model or client.models.list().data[0].id
    images = [image_part(p) for p in args.image]
    for question in args.question:
        request = dict(model=model, messages=[{"role": "user", "content": images + [text_part(question)]}],
                       max_tokens=args.max_tokens, temperature=args.temperature)
        if args.no_stream:
            print(client.chat.completions.create(**request).choices[0].message.content)
            continue
        for chunk in client.chat.completions.create(stream=True, **request):
            if chunk.choices and chunk.choices[0].delta.content:
                print(chunk.choices[0].delta.content, end="", flush=True)
        print()


if __name__ == "__main__":
    main()

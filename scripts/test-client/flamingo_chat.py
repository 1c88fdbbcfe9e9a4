"""Helpers shared by the test clients of `flamingo serve`.

The chat template here mirrors Sources/FlamingoServer/Completion/ChatTemplate.swift (documented in
the README): tests render a conversation the way the server does and give the resulting prompt to
`flamingo generate --prompt`, whose greedy answer must equal the server's.
"""
import base64
import mimetypes
import os

IMAGE_MARKER = "<image>"


def data_url(path):
    """A data: URL with the file's bytes in base64 (PNG or JPEG)."""
    mime = mimetypes.guess_type(path)[0] or "image/png"
    with open(path, "rb") as f:
        return "data:%s;base64,%s" % (mime, base64.b64encode(f.read()).decode("ascii"))


def image_part(path):
    return {"type": "image_url", "image_url": {"url": data_url(path)}}


def text_part(text):
    return {"type": "text", "text": text}


def render(messages, end_of_utterance=None):
    """The server's prompt for `messages`, and the image paths in prompt order.

    Image parts here carry a local path under the key "path" (see `image_part_with_path`)."""
    eou = end_of_utterance or ""
    prompt, images = "", []
    for m in messages:
        content = m["content"]
        parts = [text_part(content)] if isinstance(content, str) else content
        body = ""
        for p in parts:
            if p["type"] == "text":
                body += p["text"]
            else:
                body += IMAGE_MARKER
                images.append(p["path"])
        if m["role"] in ("system", "developer"):
            prompt += body + "\n"
        elif m["role"] == "user":
            prompt += "User: " + body + eou + "\n"
        else:
            prompt += "Assistant: " + body + eou + "\n"
    return prompt + "Assistant:", images


def image_part_with_path(path):
    """An image_url part that also remembers its file (for `render`); strip with `wire`."""
    part = image_part(path)
    part["path"] = os.path.abspath(path)
    return part


def wire(messages):
    """`messages` without the local "path" keys, as sent to the server."""
    out = []
    for m in messages:
        content = m["content"]
        if not isinstance(content, str):
            content = [{k: v for k, v in p.items() if k != "path"} for p in content]
        out.append({"role": m["role"], "content": content})
    return out

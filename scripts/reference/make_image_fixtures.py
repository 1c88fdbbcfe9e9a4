#!/usr/bin/env python3
"""Writes the image fixtures and goldens for Tests/FlamingoModelTests/ImageTests.swift.

Dev-time only (the Swift code and tests never run Python). Needs pillow, numpy, torch,
torchvision and transformers 5.x. Goldens were made with transformers 5.24.0, torch 2.13.0+cpu,
torchvision 0.28.0 (`pip install --no-deps torchvision==0.28.0`; uninstall it afterwards if torch
is a CPU build, see below) and Pillow 13.0.0:

    python3 scripts/reference/make_image_fixtures.py [--out Tests/Fixtures/images]

For every test image it stores
  - the image file itself (PNG/JPEG variants written by PIL, 16-bit PNGs written by hand);
  - PIL's decode after transformers' `convert_to_rgb` (composite onto white) as a uint8 .npy
    [H, W, 3] (small images) and always as an FNV-1a-64 hash, plus the hash of `convert("RGB")`
    (alpha dropped);
  - `IdeficsImageProcessor(image_size=S)(pil_image).pixel_values[0]` as a float32 .npy [3, S, S]
    (for S = 224 only every 4th row, plus the sum over the whole tensor, to stay small).
`IdeficsImageProcessor` is transformers' default (torchvision) backend, the class AutoImageProcessor
picks when torchvision is installed. The PIL backend (`IdeficsImageProcessorPil`) is run too and its
max difference to the golden is written to the manifest for information.

It also writes bad files that must fail with a specific ImageError (listed in the manifest).
"""
import argparse
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
import torch

from torchvision_compat import import_torchvision  # noqa: E402

# The IDEFICS image processor's default backend is torchvision: the goldens follow it.
torchvision = import_torchvision()
if torchvision is None:
    raise SystemExit("torchvision is needed: pip install --no-deps --target /tmp/tv torchvision==0.28.0 "
                     "&& export PYTHONPATH=/tmp/tv")

import transformers
from transformers import IdeficsImageProcessor, IdeficsImageProcessorPil
from transformers.image_transforms import convert_to_rgb

RAW_LIMIT = 80 * 60  # store PIL's RGB bytes for images up to this many pixels (bigger: hash only)


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width, height, bit_depth, color_type, raw_rows: bytes, extra=b"") -> bytes:
    return (b"\x89PNG\r\n\x1a\n"
            + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))
            + extra + png_chunk(b"IDAT", zlib.compress(raw_rows)) + png_chunk(b"IEND", b""))


def png16(arr: np.ndarray, color_type: int, extra=b"") -> bytes:
    """A 16-bit PNG from a uint16 array [H, W] or [H, W, C] (PIL cannot write 16-bit colour)."""
    h, w = arr.shape[:2]
    rows = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    return png_bytes(w, h, 16, color_type, rows, extra)


def png_adam7(arr: np.ndarray) -> bytes:
    """An interlaced (Adam7) 8-bit RGB PNG from a uint8 array [H, W, 3] (PIL cannot write one)."""
    h, w = arr.shape[:2]
    raw = b""
    for x0, y0, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]:
        sub = arr[y0::dy, x0::dx]
        if sub.shape[0] and sub.shape[1]:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    return (b"\x89PNG\r\n\x1a\n"
            + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1))
            + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


def pattern(h, w, seed, noise=10):
    """A smooth colourful picture with some edges and a little noise (compresses well)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / max(w, 1) * 6.0 + seed)
    g = 128 + 100 * np.cos(y / max(h, 1) * 5.0 - seed)
    b = 128 + 90 * np.sin((x + y) / max(w + h, 1) * 9.0)
    img = np.stack([r, g, b], -1)
    img[(x // 7 + y // 5) % 4 == 0] *= 0.55  # hard edges exercise the filter's negative lobes
    img += rng.normal(0, noise, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def save_pil(im: Image.Image, path: Path, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, **kw)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def make_images(out: Path):
    """name -> (file bytes written, golden sizes)"""
    imgs = {}

    def add(name, data, sizes=(32,)):
        (out / name).write_bytes(data)
        imgs[name] = sizes

    add("rgb_64x48.png", save_pil(Image.fromarray(pattern(48, 64, 1)), out / "rgb_64x48.png", format="PNG"))
    rgba = np.dstack([pattern(48, 64, 2), np.tile(np.linspace(0, 255, 64).round().astype(np.uint8), (48, 1))])
    rgba[:6, :, 3] = 0  # fully transparent band (colour must not leak)
    add("rgba_64x48.png", save_pil(Image.fromarray(rgba, "RGBA"), out / "x", format="PNG"))
    add("grey_20x30.png", save_pil(Image.fromarray(pattern(30, 20, 3)[..., 1]), out / "x", format="PNG"))
    la = np.dstack([pattern(24, 40, 4)[..., 0], (np.arange(40 * 24).reshape(24, 40) * 7 % 256).astype(np.uint8)])
    add("greyalpha_40x24.png", save_pil(Image.fromarray(la, "LA"), out / "x", format="PNG"))
    pal = Image.fromarray(pattern(40, 48, 5)).quantize(colors=16, dither=Image.Dither.NONE)
    add("palette_48x40.png", save_pil(pal, out / "x", format="PNG"))
    palt = Image.fromarray(pattern(21, 33, 6)).quantize(colors=8, dither=Image.Dither.NONE)
    add("palette_trns_33x21.png", save_pil(palt, out / "x", format="PNG",
                                            transparency=bytes([0, 128, 255, 255, 40, 255, 255, 200])))
    rgbt = pattern(30, 40, 7, noise=0)
    rgbt[10:20, 10:30] = (10, 200, 30)
    add("rgb_trns_40x30.png", save_pil(Image.fromarray(rgbt), out / "x", format="PNG", transparency=(10, 200, 30)))
    add("grey1bit_17x9.png", save_pil(Image.fromarray(pattern(9, 17, 8)[..., 0] > 120), out / "x", format="PNG"))

    rng = np.random.default_rng(9)
    rgb16 = pattern(34, 50, 9).astype(np.uint16) * 257 + rng.integers(0, 257, (34, 50, 3)).astype(np.uint16)
    add("rgb16_50x34.png", png16(rgb16, 2))
    rgba16 = np.dstack([pattern(36, 24, 10).astype(np.uint16) * 256 + 200,
                        (np.linspace(0, 65535, 24 * 36).reshape(36, 24)).astype(np.uint16)])
    add("rgba16_24x36.png", png16(rgba16, 6))
    grey16 = (pattern(30, 30, 11)[..., 0].astype(np.uint16) * 2)  # 0..510: PIL clips >255 to white
    add("grey16_30x30.png", png16(grey16, 0))
    la16 = np.dstack([pattern(20, 26, 12)[..., 2].astype(np.uint16) * 257,
                      np.tile(np.linspace(0, 65535, 26).astype(np.uint16), (20, 1))])
    add("greyalpha16_26x20.png", png16(la16, 4))
    key = np.array([12, 34, 56], np.uint16)
    rgb16k = pattern(18, 22, 13).astype(np.uint16) * 256
    rgb16k[4:9, 5:15] = key * 256 + 7  # high bytes equal the (<=255) key: PIL makes these transparent
    add("rgb16_trns_22x18.png", png16(rgb16k, 2, png_chunk(b"tRNS", key.astype(">u2").tobytes())))

    add("interlaced_37x29.png", png_adam7(pattern(29, 37, 21)))

    add("rgb_32x32.png", save_pil(Image.fromarray(pattern(32, 32, 14)), out / "x", format="PNG"))
    add("rgb_224x224.png", save_pil(Image.fromarray(pattern(224, 224, 15, noise=3)), out / "x", format="PNG"))
    add("photo_80x60.jpg", save_pil(Image.fromarray(pattern(60, 80, 16)), out / "x", format="JPEG", quality=90))
    add("grey_45x37.jpg", save_pil(Image.fromarray(pattern(37, 45, 17)[..., 0]), out / "x", format="JPEG", quality=85))
    add("progressive_64x40.jpg", save_pil(Image.fromarray(pattern(40, 64, 18)), out / "x", format="JPEG",
                                          quality=80, progressive=True, subsampling="4:4:4"))
    add("photo_300x200.jpg", save_pil(Image.fromarray(pattern(200, 300, 19, noise=4)), out / "x", format="JPEG",
                                      quality=85), sizes=(224, 32))
    (out / "x").unlink()
    return imgs


def make_bad_files(out: Path):
    bad = []

    def add(name, data, error, fmt=None):
        (out / name).write_bytes(data)
        bad.append({"file": name, "error": error, "format": fmt})

    png = (out / "rgb_64x48.png").read_bytes()
    jpg = (out / "photo_80x60.jpg").read_bytes()
    add("bad_text.png", b"This is a text file that only pretends to be a PNG.\n", "notAnImage")
    add("bad_empty.png", b"", "emptyFile")
    add("bad_truncated.png", png[: len(png) // 2], "truncated", "PNG")
    add("bad_truncated.jpg", jpg[: len(jpg) // 2], "truncated", "JPEG")
    # A flipped byte inside IDAT: libpng's CRC check rejects it.
    idat = png.index(b"IDAT") + 4 + 20
    add("bad_crc.png", png[:idat] + bytes([png[idat] ^ 0xFF]) + png[idat + 1:], "corrupt", "PNG")
    # Valid chunks whose zlib stream is garbage.
    add("bad_zlib.png", b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
        + png_chunk(b"IDAT", b"\x78\x9c" + bytes(range(7, 200, 3))) + png_chunk(b"IEND", b""), "corrupt", "PNG")
    add("bad_zero_width.png", png_bytes(0, 5, 8, 2, b""), "zeroSize")
    add("bad_huge.png", png_bytes(20000, 20000, 8, 2, b"\x00" * 64), "tooLarge")
    sof = jpg.index(b"\xff\xc0") + 5  # SOF0: length(2) precision(1) height(2) width(2)
    add("bad_huge.jpg", jpg[:sof] + struct.pack(">HH", 20000, 20000) + jpg[sof + 4:], "tooLarge")
    add("bad_zero_height.jpg", jpg[:sof] + struct.pack(">H", 0) + jpg[sof + 2:], "zeroSize")
    add("bad_cmyk.jpg", save_pil(Image.new("CMYK", (16, 16), (10, 20, 30, 40)), out / "x", format="JPEG"),
        "unsupportedPixelFormat", "JPEG")
    add("bad_image.gif", save_pil(Image.fromarray(pattern(8, 8, 20)).convert("P"), out / "x", format="GIF"),
        "unsupportedFormat", "GIF")
    (out / "x").unlink()
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "Tests/Fixtures/images"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()

    imgs = make_images(out)
    bad = make_bad_files(out)

    manifest = {
        "generator": "scripts/reference/make_image_fixtures.py",
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "pillow": Image.__version__,
                     "numpy": np.__version__},
        "processor": "transformers.IdeficsImageProcessor (torchvision backend), defaults + image_size",
        "images": [], "bad": bad,
    }
    processors = {}
    for name, sizes in imgs.items():
        pil = Image.open(out / name)
        mode = pil.mode
        rgb = convert_to_rgb(pil, return_numpy=True)  # what the processor does first
        assert rgb.dtype == np.uint8 and rgb.shape == (pil.height, pil.width, 3)
        drop = np.array(Image.open(out / name).convert("RGB"))
        entry = {"file": name, "width": pil.width, "height": pil.height, "pil_mode": mode,
                 "rgb_fnv1a64": fnv1a64(rgb.tobytes()), "drop_alpha_fnv1a64": fnv1a64(drop.tobytes()),
                 "rgb": None, "goldens": []}
        stem = name.rsplit(".", 1)[0] + "_" + name.rsplit(".", 1)[1]
        if pil.width * pil.height <= RAW_LIMIT:
            entry["rgb"] = f"{stem}.rgb.npy"
            np.save(out / entry["rgb"], rgb)
        for size in sizes:
            if size not in processors:
                processors[size] = (IdeficsImageProcessor(image_size=size), IdeficsImageProcessorPil(image_size=size))
            tv, pl = processors[size]
            pv = tv(Image.open(out / name), return_tensors="pt")[0].numpy().astype(np.float32)
            pv_pil = pl(Image.open(out / name), return_tensors="pt")[0].numpy().astype(np.float32)
            assert pv.shape == (3, size, size), pv.shape
            every = 1 if size <= 64 else 4
            golden = {"size": size, "pixel_values": f"{stem}.s{size}.npy", "row_step": every,
                      "sum": float(pv.astype(np.float64).sum()),
                      "min": float(pv.min()), "max": float(pv.max()),
                      "pil_backend_max_abs_diff": float(np.abs(pv - pv_pil).max())}
            np.save(out / golden["pixel_values"], np.ascontiguousarray(pv[:, ::every, :]))
            entry["goldens"].append(golden)
        manifest["images"].append(entry)

    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {len(list(out.iterdir()))} files, {total / 1024:.0f} KiB, to {out}")
    for e in manifest["images"]:
        for g in e["goldens"]:
            print(f"  {e['file']:24s} {e['pil_mode']:5s} -> {g['size']:3d}  PIL-backend max diff {g['pil_backend_max_abs_diff']:.4f}")


if __name__ == "__main__":
    main()

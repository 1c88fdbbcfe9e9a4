"""Synthetic scenes for the demo model: 1-4 copies of one shape in one colour on a light background.

A scene is fully described by a `Scene` (shape, colour, count, boxes, colours, background); `draw`
renders it deterministically at the model's image size (drawn at 4x and box-filtered down, so edges
are anti-aliased the same way every time). `sample_scene(rng, size)` draws every attribute from a
`random.Random`, so a seed fixes a whole data stream.
"""
import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

SHAPES = ["circle", "square", "triangle", "star", "cross"]
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "cross": "crosses"}
COLOURS = {  # base RGB; every object gets a small per-channel jitter
    "red": (215, 35, 35),
    "green": (40, 160, 50),
    "blue": (35, 70, 215),
    "yellow": (235, 205, 25),
    "purple": (135, 45, 165),
    "orange": (245, 130, 25),
}
COUNT_WORDS = ["one", "two", "three", "four"]
COLOUR_JITTER = 14
SUPERSAMPLE = 4


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    count: int
    boxes: tuple        # ((x, y, s), ...) top-left corner and side of each object's box, in pixels
    fills: tuple        # RGB per object
    background: tuple   # RGB

    @property
    def count_word(self):
        return COUNT_WORDS[self.count - 1]

    def noun(self):
        return self.shape if self.count == 1 else PLURALS[self.shape]

    def caption(self):
        """'two red circles' (no article, no full stop)."""
        return "%s %s %s" % (self.count_word, self.colour, self.noun())

    def attribute(self, task):
        return {"colour": self.colour, "shape": self.shape, "count": self.count_word}[task]


def _size_range(size, count):
    # object side in pixels at the final resolution (48 px: 14-22 for one or two, 13-18 for 3-4);
    # smaller circles and squares become hard to tell apart through 8 px patches
    lo, hi = (0.30, 0.46) if count <= 2 else (0.27, 0.38)
    return max(6, round(lo * size)), max(7, round(hi * size))


def sample_scene(rng, size, shape=None, colour=None, count=None):
    shape = shape or rng.choice(SHAPES)
    colour = colour or rng.choice(sorted(COLOURS))
    count = count or rng.randint(1, 4)
    lo, hi = _size_range(size, count)
    for _ in range(1000):
        boxes = []
        for _ in range(count):
            for _ in range(200):
                s = rng.randint(lo, hi)
                x, y = rng.randint(1, size - s - 1), rng.randint(1, size - s - 1)
                # keep a 2 px gap between boxes so objects never touch
                if all(x + s + 2 <= bx or bx + bs + 2 <= x or y + s + 2 <= by or by + bs + 2 <= y
                       for bx, by, bs in boxes):
                    boxes.append((x, y, s))
                    break
            else:
                break
        if len(boxes) == count:
            break
    else:
        raise RuntimeError("could not place %d objects" % count)
    base = COLOURS[colour]
    fills = tuple(tuple(min(255, max(0, c + rng.randint(-COLOUR_JITTER, COLOUR_JITTER))) for c in base)
                  for _ in range(count))
    tint = rng.randint(225, 250)
    background = tuple(min(255, tint + rng.randint(-6, 6)) for _ in range(3))
    return Scene(shape, colour, count, tuple(boxes), fills, background)


def patch_labels(scene, size, patch):
    """Per-patch label, row-major over the (size/patch)^2 grid: 1 + shape index when the patch's
    centre lies in an object's box, else 0 (vision pre-training target)."""
    g = size // patch
    out = [0] * (g * g)
    for x, y, s in scene.boxes:
        for i in range(g):
            cy = i * patch + patch / 2
            if not (y <= cy < y + s):
                continue
            for j in range(g):
                cx = j * patch + patch / 2
                if x <= cx < x + s:
                    out[i * g + j] = 1 + SHAPES.index(scene.shape)
    return out


def _polygon(shape, x, y, s):
    if shape == "triangle":
        return [(x + s / 2, y), (x + s, y + s), (x, y + s)]
    if shape == "star":
        cx, cy, r_out, r_in = x + s / 2, y + s / 2 + s * 0.05, s / 2, s * 0.2
        pts = []
        for i in range(10):
            r = r_out if i % 2 == 0 else r_in
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
        return pts
    if shape == "cross":
        t = s / 3
        return [(x + t, y), (x + 2 * t, y), (x + 2 * t, y + t), (x + s, y + t), (x + s, y + 2 * t),
                (x + 2 * t, y + 2 * t), (x + 2 * t, y + s), (x + t, y + s), (x + t, y + 2 * t),
                (x, y + 2 * t), (x, y + t), (x + t, y + t)]
    raise ValueError(shape)


def draw(scene, size):
    """RGB PIL image of exactly size x size pixels."""
    k = SUPERSAMPLE
    img = Image.new("RGB", (size * k, size * k), scene.background)
    d = ImageDraw.Draw(img)
    for (x, y, s), fill in zip(scene.boxes, scene.fills):
        X, Y, S = x * k, y * k, s * k
        if scene.shape == "circle":
            d.ellipse([X, Y, X + S - 1, Y + S - 1], fill=fill)
        elif scene.shape == "square":
            m = S * 0.06   # a square's box is as wide as the circle's, inset a little so areas are closer
            d.rectangle([X + m, Y + m, X + S - 1 - m, Y + S - 1 - m], fill=fill)
        else:
            d.polygon(_polygon(scene.shape, X, Y, S), fill=fill)
    return img.reduce(k)


if __name__ == "__main__":
    import sys
    rng = random.Random(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    out = sys.argv[2] if len(sys.argv) > 2 else "/tmp/scenes.png"
    sheet = Image.new("RGB", (48 * 8, 48 * 5), "white")
    for i in range(40):
        sc = sample_scene(rng, 48)
        sheet.paste(draw(sc, 48), ((i % 8) * 48, (i // 8) * 48))
        print(i, sc.caption())
    sheet.resize((sheet.width * 3, sheet.height * 3), Image.NEAREST).save(out)

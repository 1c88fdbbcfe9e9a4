"""Importing torchvision next to a CPU-only torch (dev-time scripts only).

torchvision's PyPI wheel for Linux is a CUDA build: next to a CPU-only torch its C extension
(detection ops such as nms) fails to load, and `import torchvision` dies registering fake kernels for
them. Image resizing does not use those ops, so declare their schemas and import again. Install it
privately so other users of the environment are unaffected (left installed, such a torchvision
breaks every other transformers image-processor import):
    pip install --no-deps --target /tmp/tv torchvision==0.28.0 && export PYTHONPATH=/tmp/tv
"""
import sys

import torch

_schemas = None  # the op library must outlive the import


def import_torchvision():
    """The torchvision module, or None when it is not installed."""
    global _schemas
    try:
        import torchvision
        return torchvision
    except RuntimeError:
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]
        _schemas = torch.library.Library("torchvision", "DEF")
        _schemas.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _schemas.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision
        return torchvision
    except ImportError:
        return None

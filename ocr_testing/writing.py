"""A writer's own characters as a ``folder`` dataset, for the fine-tuning tests."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

__all__ = ["bars_folder"]


def bars_folder(root: Path, per_class: int = 10) -> Path:
    """``root/1`` and ``root/7``: ``per_class`` drawings each of a bar, right of centre for
    "1" and left of it for "7" (a made-up way of writing that no digit model was taught)."""
    for label, x in (("1", 20), ("7", 8)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            image = Image.new("L", (40, 40), 255)
            image.paste(0, (x + i % 3, 5, x + i % 3 + 6, 35))
            image.save(root / label / f"{i}.png")
    return root

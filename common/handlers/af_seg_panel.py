"""PNG panel of the whole AF-Seg pipeline at evaluation: image | weak label | clean background | G(x) | S(x) | truth."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from common.visualize import save_panel

__all__ = ["save_pipeline_panel"]


def save_pipeline_panel(
    items: Sequence[dict],
    truth_items: Sequence[dict],
    generator: torch.nn.Module,
    segmenter: torch.nn.Module,
    path: str,
    num_samples: int = 4,
    device: str | torch.device = "cpu",
) -> str:
    """Panel of the whole AF-Seg pipeline, one row per image: image | weak label | clean background | synthetic
    ``G(x)`` | prediction ``S(x) > 0.5`` | truth.

    For evaluation only (it reads the ground truth).

    Args:
        items: stage-2 items ``{"image", "weak", "background"}`` (paths of ``(C, H, W)``, ``(1, H, W)``, ``(C, H, W)``
            ``.npy`` arrays).
        truth_items: prepared items ``{"image", "label"}``; the truth of an item is looked up by its image path.
        generator, segmenter: trained ``G`` and ``S`` (``(1, C, H, W) ->`` ``(1, C, H, W)``, ``(1, 1, H, W)``).
        path: PNG to write.
        num_samples: rows.
        device: device of the networks.

    Returns:
        ``path``.
    """
    truth = {item["image"]: item.get("label") for item in truth_items}
    rows = []
    generator.eval()
    segmenter.eval()
    with torch.no_grad():
        for item in list(items)[:num_samples]:
            image = np.load(item["image"])
            x = torch.as_tensor(image, dtype=torch.float32)[None].to(device)
            synthetic = generator(x)[0].cpu().numpy()
            pred = (torch.sigmoid(segmenter(x)) > 0.5)[0].cpu().numpy().astype(np.uint8)
            label = truth.get(item["image"])
            rows.append(
                {
                    "image": image,
                    "weak label": np.load(item["weak"]),
                    "clean background": np.load(item["background"]),
                    "synthetic": synthetic,
                    "prediction": pred,
                    "truth": np.load(label) if label else np.zeros_like(pred),
                }
            )
    save_panel(rows, path, label_keys=("weak label", "prediction", "truth"), num_classes=2)
    return str(path)

"""PNG panel of the translation model at evaluation: input | healthy | residual | segmentation | truth."""

from __future__ import annotations

from pathlib import Path

import torch
from ignite.engine import Engine, Events
from monai.utils.enums import CommonKeys as Keys

from common.networks.translation import TranslationSegNet
from common.networks.translation_baseline import TranslationBaselineNet
from common.visualize import save_panel

__all__ = ["TranslationPanelSaver"]


class TranslationPanelSaver:
    """PNG panel of the first evaluated P images: input | healthy | residual | segmentation | truth, where healthy
    ``G_com(c)`` and residual ``G_res(c, u)`` come from the translation P -> A (Vorontsov et al., Fig. 5-7). A
    baseline network (no translation) gives input | segmentation | truth.

    Args:
        network: the :class:`~common.networks.translation.TranslationSegNet` or
            :class:`~common.networks.translation_baseline.TranslationBaselineNet` being evaluated.
        output_dir: folder of the PNG.
        filename: PNG file name.
        num_samples: rows.
        threshold: segmentation threshold on the foreground probability (channel 1 of the ``prob`` item, kept by a
            ``CopyItemsd`` after the softmax).
    """

    def __init__(
        self,
        network: TranslationSegNet | TranslationBaselineNet,
        output_dir: str,
        filename: str = "translation_panel.png",
        num_samples: int = 6,
        threshold: float = 0.5,
    ) -> None:
        self.network = network
        self.path = Path(output_dir) / filename
        self.num_samples = num_samples
        self.threshold = threshold
        self.rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    @torch.no_grad()
    def collect(self, engine: Engine) -> None:
        """Takes the first items of the decollated evaluator output (``image`` ``(C, H, W)``, one-hot ``label``
        ``(2, H, W)``, ``prob`` ``(2, H, W)``) and translates their images."""
        items = engine.state.output[: max(self.num_samples - len(self.rows), 0)]
        if not items:
            return
        images = torch.stack([torch.as_tensor(item[Keys.IMAGE]) for item in items]).to(engine.state.device)
        translated = self.network.translate(images) if hasattr(self.network, "translate") else None
        for i, item in enumerate(items):
            row = {"input": images[i].cpu().numpy()}
            if translated is not None:
                row.update(healthy=translated[0][i].cpu().numpy(), residual=translated[1][i].cpu().numpy())
            row["segmentation"] = (torch.as_tensor(item["prob"])[1] > self.threshold).float().cpu().numpy()
            if Keys.LABEL in item:
                row["truth"] = torch.as_tensor(item[Keys.LABEL]).argmax(0).float().cpu().numpy()
            self.rows.append(row)

    def write(self, engine: Engine) -> None:
        if self.rows:
            save_panel(self.rows, self.path, label_keys=("segmentation", "truth"), num_classes=2)

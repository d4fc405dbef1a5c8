"""Stage 3 of AF-Seg (Yu, Dong et al., ISBI 2020, Sec. 2.3): corresponding synthesis and segmentation, end to end.

Three networks are trained together on real images ``x`` with weak labels ``y`` (stage 1) and clean backgrounds
``b`` (stage 2); ``x``, ``b`` and ``G(x)`` are ``(B, C, H, W)``, ``y`` is ``(B, 1, H, W)``:

* generator ``G`` (U-Net): ``G(x)`` is a synthetic image that keeps the objects of the weak label,
  ``L_shape = mean(|y * (G(x) - x)|)``, and whose background looks like a clean background to ``D``;
* discriminator ``D`` (patch discriminator) sees backgrounds only: real ``(1 - y) * b``, fake ``(1 - y) * G(x)``;
  it makes ``G`` remove the objects the weak label missed (its false negatives);
* segmenter ``S`` (U-Net): ``L_seg = BCE(S(G(x)), y)``. The weak label is exactly right for the synthetic image.

Generator objective ``L = L_GAN + L_seg + mu * L_shape`` (``mu = 50``), minimised over ``G`` and ``S`` together;
``D`` minimises its own adversarial loss. At test time ``S`` runs on real images.

``monai.engines.GanTrainer`` is unconditional (its generator input is a latent vector), so this is a separate
``monai.engines.Trainer`` subclass in its style.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.engines.utils import IterationEvents
from monai.losses import PatchAdversarialLoss
from torch.optim.optimizer import Optimizer
from torch.utils.data import DataLoader

from common.engines.utils import AmpTrainer

__all__ = ["AFSegTrainer", "checkpoint_norm", "linear_decay", "segmenter_norm"]


def linear_decay(constant_epochs: int, decay_epochs: int) -> Callable[[int], float]:
    """Learning-rate factor of pix2pix/AF-Seg: 1 for ``constant_epochs``, then linear to 0 over ``decay_epochs``.

    For ``torch.optim.lr_scheduler.LambdaLR`` stepped once per epoch (``LrScheduleHandler(epoch_level=True)``).
    """

    def factor(epoch: int) -> float:
        return 1.0 - max(0, epoch + 1 - constant_epochs) / float(decay_epochs + 1)

    return factor


def segmenter_norm(items: Sequence[Mapping], image_norm: str = "instance", volume_norm: str = "batch") -> str:
    """The segmenter's normalisation: ``volume_norm`` when ``items`` hold several slices of one volume, else
    ``image_norm`` (the paper's 2D images).

    Instance norm normalises every feature map over its own slice, so the segmenter cannot tell an object-free slice
    (drift and noise only) from one with objects: its logits there sit around one level and about a tenth of the
    pixels cross 0.5 (issue 34, ``sparse_stack``). Batch norm keeps the intensities' scale across slices.
    """
    from common.data.slices import has_volumes

    return volume_norm if has_volumes(items) else image_norm


def checkpoint_norm(path: str | os.PathLike, default: str = "instance") -> str:
    """``"batch"`` if the segmenter saved in ``path`` (``{"model": state_dict, ...}``) holds batch-norm running
    statistics, else ``default`` (also when there is no file yet): evaluation and inference build the network that
    training saved."""
    if not Path(path).is_file():
        return default
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    return "batch" if any(k.endswith("running_mean") for k in state) else default


def _last(output: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """The final prediction of a discriminator that returns its intermediate features (``PatchDiscriminator``)."""
    return output[-1] if isinstance(output, (list, tuple)) else output


class AFSegTrainer(AmpTrainer):
    """Trains AF-Seg's generator, discriminator and segmenter on ``{"image", "label", "background"}`` batches.

    Args:
        device: device of the networks.
        max_epochs: epochs (paper: 50 constant + 50 decaying).
        train_data_loader: batches of ``image_key`` ``(B, C, H, W)`` real patches, ``label_key`` ``(B, 1, H, W)``
            weak labels (0/1) and ``background_key`` ``(B, C, H, W)`` clean backgrounds at the same place (the same
            channels as the image: the discriminator compares them with ``G(x)``).
        generator: ``G``, ``(B, C, H, W) -> (B, C, H, W)``.
        discriminator: ``D``, ``(B, C, H, W) ->`` patch logits, or a list whose last item they are.
        segmenter: ``S``, ``(B, C, H, W) -> (B, 1, H, W)`` logits.
        g_optimizer: optimiser over the parameters of ``G`` and ``S`` (trained end to end).
        d_optimizer: optimiser over the parameters of ``D``.
        shape_weight: ``mu`` (50).
        adversarial_loss: GAN criterion; default least squares (pix2pix/CycleGAN practice, the paper names none).
        seg_loss: segmentation loss on logits; default BCE with logits.
        image_key, label_key, background_key: batch keys.
        decollate: decollate the output (``True`` here: every tensor of the output has the batch size).
        trainer_kwargs: the remaining arguments of :class:`~common.engines.utils.AmpTrainer` (``epoch_length``,
            ``train_handlers``, ``amp``, ``optim_set_to_none``, ...).

    ``engine.state.output`` holds ``image``, ``label``, ``synthetic`` ``G(x)``, ``pred`` ``S(G(x))`` logits and
    the scalars ``loss`` (generator objective), ``g_adv_loss``, ``seg_loss``, ``shape_loss``, ``d_loss``.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: DataLoader,
        generator: torch.nn.Module,
        discriminator: torch.nn.Module,
        segmenter: torch.nn.Module,
        g_optimizer: Optimizer,
        d_optimizer: Optimizer,
        shape_weight: float = 50.0,
        adversarial_loss: Callable | None = None,
        seg_loss: Callable | None = None,
        image_key: str = "image",
        label_key: str = "label",
        background_key: str = "background",
        decollate: bool = True,
        **trainer_kwargs: Any,
    ) -> None:
        super().__init__(device, max_epochs, train_data_loader, decollate=decollate, **trainer_kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.segmenter = segmenter
        self.network = segmenter
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        self.shape_weight = shape_weight
        self.adversarial_loss = adversarial_loss or PatchAdversarialLoss(criterion="least_squares")
        self.seg_loss = seg_loss or torch.nn.BCEWithLogitsLoss()
        self.keys = (image_key, label_key, background_key)

    def _iteration(self, engine: AFSegTrainer, batchdata: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]]:
        """One generator+segmenter step, then one discriminator step; fires ``IterationEvents.MODEL_COMPLETED``."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        image, label, background = (
            torch.as_tensor(batchdata[k]).to(engine.state.device, non_blocking=engine.non_blocking).float()
            for k in engine.keys
        )
        label = (label > 0).float()
        if background.shape[1] != image.shape[1]:
            raise ValueError(
                f"clean backgrounds have {background.shape[1]} channel(s), images {image.shape[1]}: the discriminator "
                "compares the background with G(x), which has the image's channels (stage 2 outputs of a version "
                "that inpainted one channel only? recompute them)."
            )
        engine.generator.train()
        engine.segmenter.train()
        engine.discriminator.train()

        # G and S: L = L_GAN + L_seg + mu * L_shape (paper Eq. 4)
        # (under amp the losses are computed in float32; ``.float()`` is the identity on float32 tensors)
        engine.g_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with engine._autocast():
            synthetic = engine.generator(image)
            pred = engine.segmenter(synthetic)
            fake_logits = _last(engine.discriminator((1 - label) * synthetic)).float()
            g_adv = engine.adversarial_loss(fake_logits, target_is_real=True, for_discriminator=False)
            seg = engine.seg_loss(pred.float(), label)
            shape = (label * (synthetic.float() - image)).abs().mean()
            loss = g_adv + seg + engine.shape_weight * shape
        engine._backward_step(loss, engine.g_optimizer)

        # D: real = (1 - y) * clean background, fake = (1 - y) * G(x)
        engine.d_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        # one forward over real and fake together (instance norm: per sample), as DistributedDataParallel requires
        both = torch.cat([(1 - label) * background, (1 - label) * synthetic.detach().float()])
        with engine._autocast():
            real_logits, fake_logits = _last(engine.discriminator(both)).float().chunk(2)
            d_loss = 0.5 * (
                engine.adversarial_loss(real_logits, target_is_real=True, for_discriminator=True)
                + engine.adversarial_loss(fake_logits, target_is_real=False, for_discriminator=True)
            )
        engine._backward_step(d_loss, engine.d_optimizer)
        if engine.scaler is not None:
            engine.scaler.update()

        engine.state.output = {
            "image": image,
            "label": label,
            "synthetic": synthetic.detach().float(),
            "pred": pred.detach().float(),
            "loss": loss.detach(),
            "g_adv_loss": g_adv.detach(),
            "seg_loss": seg.detach(),
            "shape_loss": shape.detach(),
            "d_loss": d_loss.detach(),
        }
        engine.fire_event(IterationEvents.MODEL_COMPLETED)  # decollation and postprocessing hook here
        return engine.state.output

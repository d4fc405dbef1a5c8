"""Training of MIPR's label-to-image generator (Dai, Zhu et al., arXiv 2204.10513, Sec. 2.3-2.4), SPADE style.

One iteration takes a labelled batch ``{"image": (B, C, H, W) in [-1, 1], "label": (B, 1, H, W) class indices}``,
one-hot encodes the label and draws two patch-shuffle arrangements with the trainer's own seeded generator: ``a`` for
the encoder input ``x_a`` and ``b`` for the label ``t_b`` and the target ``x_b`` (the paper: "different values of N
between the encoder's input and label"; with ``separate_arrangements=False``, ``a = b``). Then

1. discriminator step: hinge loss on ``D(concat(t_b, x_b))`` (real) and ``D(concat(t_b, G(x_a, t_b)))`` (fake,
   detached);
2. generator step (``D`` frozen): hinge generator loss on the fake pair + ``feature_matching_weight`` * feature
   matching between the fake and real pairs' ``D`` features (+ ``perceptual_weight`` * an optional perceptual loss
   of ``G(x_a, t_b)`` against ``x_b``).

These are the losses and weights of the NVlabs SPADE codebase, whose hyper-parameters the paper uses (TTUR: Adam
with betas (0, 0.9), lr 1e-4 for ``G`` and 4e-4 for ``D``, set up by the caller's optimisers), except that MONAI's
hinge criterion applies tanh to the logits first (``D``: ``2 - mean tanh D(real) + mean tanh D(fake)``, ``G``:
``1 - mean tanh D(fake)``; NVlabs: ``-mean D(fake)`` for ``G``); ``adversarial_loss`` swaps it. SPADE's VGG loss
needs pretrained weights; it is off unless a module is given. Real and fake pairs go through ``D`` in one batch
(instance norm is per sample), as ``DistributedDataParallel`` wants one forward per step.

With separate arrangements, a SPADE+ generator's detail path sees the Sobel map of ``x_a``: its edges sit where
arrangement ``a`` puts them, not where the target ``x_b`` has them (at annotation time image and label are aligned).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.engines.utils import IterationEvents
from monai.losses import PatchAdversarialLoss
from monai.networks.utils import one_hot
from monai.utils import convert_to_tensor
from torch.optim.optimizer import Optimizer
from torch.utils.data import DataLoader

from common.engines.utils import AmpTrainer
from common.losses.gan import FeatureMatchingLoss
from common.transforms.patch_shuffle import PatchShuffle, random_patch_order

__all__ = ["PixelRearrangementTrainer"]


def _halves(tensors: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Splits each ``(2B, ...)`` tensor of a list into its first and second batch halves."""
    pairs = [t.chunk(2) for t in tensors]
    return [p[0] for p in pairs], [p[1] for p in pairs]


class PixelRearrangementTrainer(AmpTrainer):
    """Trains MIPR's generator ``G(x, t)`` and multi-scale discriminator ``D`` on labelled ``{"image", "label"}``
    batches (module doc).

    Args:
        device: device of the networks.
        max_epochs: epochs (the paper: 500).
        train_data_loader: batches of ``image_key`` ``(B, C, H, W)`` in [-1, 1] and ``label_key`` ``(B, 1, H, W)``
            integer class indices; ``H`` and ``W`` divisible by ``shuffle_grid``.
        generator: ``G``, ``(image (B, C, H, W), one-hot label (B, num_classes, H, W)) -> (B, C, H, W)`` in [-1, 1]
            (``common.networks.spade_generator.SPADEPlusGenerator``).
        discriminator: ``D`` on ``(B, num_classes + C, H, W)``, returning ``(outputs, features)`` like
            ``monai.networks.nets.MultiScalePatchDiscriminator``
            (``common.networks.patch_discriminator.spectral_norm_multiscale_discriminator``).
        g_optimizer, d_optimizer: optimisers of ``G`` and ``D``.
        num_classes: classes of the label, background included.
        feature_matching_weight: weight of the feature-matching loss (SPADE: 10).
        perceptual_loss: optional ``(fake, target) -> scalar`` loss, e.g. a VGG loss; ``None`` (default) skips it.
        perceptual_weight: its weight (SPADE: 10).
        separate_arrangements: draw the encoder input's arrangement independently of the label's.
        shuffle_grid: K of the patch shuffle (the paper: 2); 1 turns the shuffle off.
        shuffle_prob: probability that an arrangement is drawn at all (else the identity); a drawn arrangement
            may also be the identity (for K = 2: the original or one of the six swaps, 1/7 each), so ``G`` also
            learns the unshuffled images it is applied to.
        seed: seed of the arrangement generator.
        adversarial_loss: criterion on the patch logits; default ``PatchAdversarialLoss(criterion="hinge")``.
        image_key, label_key: batch keys.
        trainer_kwargs: the remaining arguments of :class:`~common.engines.utils.AmpTrainer` (``epoch_length``,
            ``train_handlers``, ``amp``, ``optim_set_to_none``, ...; ``decollate`` defaults to ``False``: the output
            holds scalars next to the batch tensors).

    ``engine.state.output`` holds the float scalars ``loss_d``, ``loss_g_adv``, ``loss_fm``, ``loss_g`` (the
    generator objective) and, with a perceptual loss, ``loss_perceptual``; and for panels the tensors ``image``
    (encoder input ``x_a``), ``label`` (``(B, 1, H, W)`` class indices in arrangement ``b``), ``target`` (``x_b``)
    and ``fake`` (``G(x_a, t_b)``, detached).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: DataLoader,
        generator: torch.nn.Module,
        discriminator: torch.nn.Module,
        g_optimizer: Optimizer,
        d_optimizer: Optimizer,
        num_classes: int,
        feature_matching_weight: float = 10.0,
        perceptual_loss: Callable | None = None,
        perceptual_weight: float = 10.0,
        separate_arrangements: bool = True,
        shuffle_grid: int = 2,
        shuffle_prob: float = 1.0,
        seed: int = 0,
        adversarial_loss: Callable | None = None,
        image_key: str = "image",
        label_key: str = "label",
        **trainer_kwargs: Any,
    ) -> None:
        super().__init__(device, max_epochs, train_data_loader, **trainer_kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.network = generator
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        self.num_classes = num_classes
        self.feature_matching_weight = feature_matching_weight
        self.perceptual_loss = perceptual_loss
        self.perceptual_weight = perceptual_weight
        self.separate_arrangements = separate_arrangements
        self.patch_shuffle = PatchShuffle(shuffle_grid)
        self.shuffle_prob = shuffle_prob
        self.rng = np.random.RandomState(seed)
        self.adversarial_loss = adversarial_loss or PatchAdversarialLoss(criterion="hinge")
        self.feature_matching_loss = FeatureMatchingLoss()
        self.keys = (image_key, label_key)

    def draw_arrangement(self) -> tuple[int, ...]:
        """One patch-shuffle arrangement from the trainer's generator (module doc, ``shuffle_prob``)."""
        grid = self.patch_shuffle.grid
        if grid == 1 or self.rng.rand() >= self.shuffle_prob:
            return tuple(range(grid * grid))
        return random_patch_order(grid, self.rng, allow_identity=True)

    def _iteration(self, engine: PixelRearrangementTrainer, batchdata: dict[str, Any]) -> dict[str, Any]:
        """One discriminator step then one generator step; fires ``IterationEvents`` as the MONAI trainers do."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        image, label = (
            convert_to_tensor(batchdata[k], track_meta=False).to(
                engine.state.device, non_blocking=engine.non_blocking, **engine.to_kwargs
            )
            for k in engine.keys
        )
        image = image.float()
        onehot = one_hot(label.long(), engine.num_classes, dim=1)
        order_b = engine.draw_arrangement()
        order_a = engine.draw_arrangement() if engine.separate_arrangements else order_b
        shuffle = engine.patch_shuffle
        x_a, x_b, t_b = shuffle(image, order_a), shuffle(image, order_b), shuffle(onehot, order_b)
        real_pair = torch.cat([t_b, x_b], dim=1)
        engine.generator.train()
        engine.discriminator.train()

        # D step: hinge on real (t_b, x_b) vs fake (t_b, G(x_a, t_b)) pairs
        engine.d_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with engine._autocast():
            fake = engine.generator(x_a, t_b)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            logits, _ = engine.discriminator(torch.cat([torch.cat([t_b, fake.detach()], dim=1), real_pair]))
            fake_logits, real_logits = _halves(logits)
            loss_d_fake = engine.adversarial_loss(fake_logits, target_is_real=False, for_discriminator=True)
            loss_d = loss_d_fake + engine.adversarial_loss(real_logits, target_is_real=True, for_discriminator=True)
        engine._backward_step(loss_d, engine.d_optimizer)

        # G step (D frozen): hinge generator loss + feature matching (+ perceptual)
        engine.discriminator.requires_grad_(False)
        engine.g_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with engine._autocast():
            logits, features = engine.discriminator(torch.cat([torch.cat([t_b, fake], dim=1), real_pair]))
            fake_logits, _ = _halves(logits)
            fake_features, real_features = zip(*(_halves(f) for f in features))
            loss_g_adv = engine.adversarial_loss(fake_logits, target_is_real=True, for_discriminator=False)
            loss_fm = engine.feature_matching_loss(fake_features, real_features)
            loss_g = loss_g_adv + engine.feature_matching_weight * loss_fm
            terms = {}
            if engine.perceptual_loss is not None:
                terms["loss_perceptual"] = engine.perceptual_loss(fake.float(), x_b)
                loss_g = loss_g + engine.perceptual_weight * terms["loss_perceptual"]
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        engine._backward_step(loss_g, engine.g_optimizer)
        engine.discriminator.requires_grad_(True)
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if engine.scaler is not None:
            engine.scaler.update()

        engine.state.output = {
            "image": x_a,
            "label": shuffle(label, order_b),
            "target": x_b,
            "fake": fake.detach().float(),
            "loss_d": loss_d.item(),
            "loss_g_adv": loss_g_adv.item(),
            "loss_fm": loss_fm.item(),
            "loss_g": loss_g.item(),
            **{k: v.item() for k, v in terms.items()},
        }
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

"""Adversarial semi-supervised segmentation trainer (Tan et al. 2022, following Hung et al., BMVC 2018).

One iteration draws a labelled batch (the labelled loader drives the epoch) and, when the unlabelled data is in use,
a batch from an endless iterator over the unlabelled loader, then

1. updates the segmenter S with the discriminator D frozen (Tan et al. Sec. 3.3, Eq. 2 and 5-6; Hung et al.)::

       L_S = CE(S(x_l), y_l) + lambda_adv * BCE(D(S(x_l)), 1)
             + lambda_semi_adv * BCE(D(S(x_u)), 1)                       (epoch > semi_adv_start_epoch)
             + lambda_semi * CE(S(x_u), pseudo-label, ignore unconfident)  (epoch > semi_start_epoch)

   where the pseudo-label is ``argmax S(x_u)`` where ``sigmoid(D(S(x_u))) > T_semi`` and ``ignore_index`` elsewhere;
2. updates D on one-hot ground truth (real, target 1) and detached predictions (fake, target 0), per pixel
   (Tan et al. Sec. 3.2, Eq. 1), optionally with the unlabelled predictions as further fakes (as in Hung et al.'s code).

Without a discriminator (``d_network=None``) it is plain cross-entropy training of S on the labelled data, the
"labels only" baseline. ``engine.state.output`` holds the loss terms, the pseudo-label ``coverage`` (share of
unlabelled pixels above ``T_semi``) and the mean confidence, ready for ``StatsHandler`` and TensorBoard through
:class:`common.engines.utils.ScalarTerms`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer, SimpleInferer
from monai.utils import CommonKeys as Keys
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from common.engines.utils import AmpTrainer, endless, step_output

__all__ = ["AdversarialSemiTrainer", "confident_pseudo_labels"]


def confident_pseudo_labels(
    probs: torch.Tensor, confidence: torch.Tensor, threshold: float, ignore_index: int = 255
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-labels of the semi-supervised phase: the indicator of Tan et al. Eq. 6 (Sec. 3.3.2), as in Hung et al.

    Args:
        probs: ``(B, C, H, W)`` segmenter softmax on unlabelled images.
        confidence: ``(B, 1, H, W)`` discriminator confidence ``sigmoid(D(probs))``.
        threshold: T_semi; pixels with confidence above it keep their argmax class.
        ignore_index: value of the unconfident pixels (excluded from the cross-entropy).

    Returns:
        ``(B, H, W)`` long pseudo-labels, and the ``(B, H, W)`` boolean mask of the confident pixels.
    """
    mask = confidence[:, 0] > threshold
    labels = probs.argmax(dim=1)
    return torch.where(mask, labels, torch.full_like(labels, ignore_index)), mask


class AdversarialSemiTrainer(AmpTrainer):
    """Segmenter / discriminator training of Tan et al. (2022) and Hung et al. (2018), as a MONAI ``Trainer``.

    Epochs are counted on the labelled loader (or are ``epoch_length`` iterations); phases switch at epoch
    boundaries (Tan et al. switch to the semi-supervised phase after 1500 of 5000 epochs, Sec. 3.3.2 and Table 1).
    All weights and thresholds default to Hung et al.'s values.

    Args:
        device: device of the networks.
        max_epochs: epochs (passes over the labelled loader).
        train_data_loader: labelled batches ``{"image": (B, Cin, H, W), "label": (B, 1, H, W)}``.
        network: segmenter S, ``(B, Cin, H, W)`` -> ``(B, C, H, W)`` logits.
        optimizer: optimiser of S.
        num_classes: C, classes including background.
        d_network: discriminator D, ``(B, C, H, W)`` -> ``(B, 1, H, W)`` logits; ``None`` trains S on labels only.
        d_optimizer: optimiser of D (required with ``d_network``).
        unlabeled_data_loader: unlabelled batches ``{"image": (B, Cin, H, W)}``; ``None`` (or no discriminator)
            leaves the unlabelled data unused.
        lambda_adv: weight of the adversarial loss on labelled predictions (Hung et al.: 0.01).
        lambda_semi: weight of the pseudo-label cross-entropy (Hung et al.: 0.1).
        lambda_semi_adv: weight of the adversarial loss on unlabelled predictions (Hung et al.: 0.001).
        semi_threshold: T_semi, confidence above which a pixel gets a pseudo-label (Hung et al.: 0.2).
        semi_start_epoch: warm-up epochs before the pseudo-label loss starts.
        semi_adv_start_epoch: epochs before the unlabelled adversarial loss starts (Hung et al.: 0).
        d_unlabeled_fakes: also show D the unlabelled predictions as fakes (Hung et al.'s ``D_remain``).
        ignore_index: label value excluded from the cross-entropy.
        inferer: how S is run on a batch (``SimpleInferer`` by default).
        trainer_kwargs: the remaining arguments of :class:`~common.engines.utils.AmpTrainer` (``epoch_length``,
            ``train_handlers``, ``amp``, ``optim_set_to_none``, ...; ``decollate`` defaults to ``False``: the
            unlabelled ``confidence`` map ``(Bu, 1, H, W)`` may have another batch size than the labelled tensors).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: DataLoader,
        network: torch.nn.Module,
        optimizer: Optimizer,
        num_classes: int,
        d_network: torch.nn.Module | None = None,
        d_optimizer: Optimizer | None = None,
        unlabeled_data_loader: DataLoader | None = None,
        lambda_adv: float = 0.01,
        lambda_semi: float = 0.1,
        lambda_semi_adv: float = 0.001,
        semi_threshold: float = 0.2,
        semi_start_epoch: int = 0,
        semi_adv_start_epoch: int = 0,
        d_unlabeled_fakes: bool = True,
        ignore_index: int = 255,
        inferer: Inferer | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        if (d_network is None) != (d_optimizer is None):
            raise ValueError("d_network and d_optimizer must be given together (or both None for labels only).")
        super().__init__(device, max_epochs, train_data_loader, **trainer_kwargs)
        self.network = network
        self.optimizer = optimizer
        self.num_classes = num_classes
        self.d_network = d_network
        self.d_optimizer = d_optimizer
        self.unlabeled_data_loader = unlabeled_data_loader if d_network is not None else None
        self.lambda_adv = lambda_adv
        self.lambda_semi = lambda_semi
        self.lambda_semi_adv = lambda_semi_adv
        self.semi_threshold = semi_threshold
        self.semi_start_epoch = semi_start_epoch
        self.semi_adv_start_epoch = semi_adv_start_epoch
        self.d_unlabeled_fakes = d_unlabeled_fakes
        self.ignore_index = ignore_index
        self.inferer = SimpleInferer() if inferer is None else inferer
        # made here, not at the first draw, so that a resumed run finds it and restores its place in the loader
        self._unlabeled: Iterator[Any] | None = (
            endless(self.unlabeled_data_loader, "unlabelled") if self.unlabeled_data_loader is not None else None
        )

    def _next_unlabeled(self) -> torch.Tensor:
        """The next ``(B, Cin, H, W)`` unlabelled image batch on the device."""
        if self._unlabeled is None:
            self._unlabeled = endless(self.unlabeled_data_loader, "unlabelled")
        batch = next(self._unlabeled)
        return batch[Keys.IMAGE].to(self.state.device, non_blocking=self.non_blocking, **self.to_kwargs)

    def _adv_loss(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        """Per-pixel BCE of D logits ``(B, 1, H, W)`` against all-real (1) or all-fake (0) targets."""
        target = torch.full_like(logits, 1.0 if real else 0.0)
        return F.binary_cross_entropy_with_logits(logits.float(), target.float())

    def _iteration(self, engine: AdversarialSemiTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        """One segmenter step then one discriminator step. Returns the output dict (tensors and scalar terms)."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        images, labels = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        labels = labels.long()
        epoch = engine.state.epoch
        adversarial = engine.d_network is not None
        use_unlabeled = engine.unlabeled_data_loader is not None and (
            epoch > engine.semi_start_epoch or epoch > engine.semi_adv_start_epoch
        )
        semi_active = use_unlabeled and epoch > engine.semi_start_epoch
        semi_adv_active = use_unlabeled and epoch > engine.semi_adv_start_epoch
        zero = torch.zeros((), device=engine.state.device)
        terms = {"loss_adv": zero, "loss_semi": zero, "loss_semi_adv": zero, "loss_d": zero}
        coverage, confidence_mean = 0.0, 0.0
        confidence = None

        # segmenter step (D frozen)
        engine.network.train()
        if adversarial:
            engine.d_network.train()
            engine.d_network.requires_grad_(False)
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with engine._autocast():
            logits = engine.inferer(images, engine.network)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            loss_ce = F.cross_entropy(logits.float(), labels[:, 0], ignore_index=engine.ignore_index)
            loss = loss_ce
            probs = torch.softmax(logits.float(), dim=1)
            if adversarial:
                terms["loss_adv"] = engine._adv_loss(engine.d_network(probs), real=True)
                loss = loss + engine.lambda_adv * terms["loss_adv"]
            if use_unlabeled:
                logits_u = engine.inferer(engine._next_unlabeled(), engine.network)
                probs_u = torch.softmax(logits_u.float(), dim=1)
                d_u = engine.d_network(probs_u)
                if semi_adv_active:
                    terms["loss_semi_adv"] = engine._adv_loss(d_u, real=True)
                    loss = loss + engine.lambda_semi_adv * terms["loss_semi_adv"]
                confidence = torch.sigmoid(d_u.detach().float())
                confidence_mean = float(confidence.mean())
                if semi_active:
                    pseudo, mask = confident_pseudo_labels(
                        probs_u.detach(), confidence, engine.semi_threshold, engine.ignore_index
                    )
                    coverage = float(mask.float().mean())
                    if mask.any():
                        terms["loss_semi"] = F.cross_entropy(logits_u.float(), pseudo, ignore_index=engine.ignore_index)
                        loss = loss + engine.lambda_semi * terms["loss_semi"]
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        engine._backward_step(loss, engine.optimizer)

        # discriminator step: one-hot ground truth is real, detached predictions are fake
        if adversarial:
            engine.d_network.requires_grad_(True)
            engine.d_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
            fakes = probs.detach()
            if use_unlabeled and engine.d_unlabeled_fakes:
                fakes = torch.cat([fakes, probs_u.detach()])
            real = F.one_hot(labels[:, 0], engine.num_classes).permute(0, 3, 1, 2).to(fakes.dtype)
            with engine._autocast():
                loss_d = 0.5 * (
                    engine._adv_loss(engine.d_network(real), real=True)
                    + engine._adv_loss(engine.d_network(fakes), real=False)
                )
            engine._backward_step(loss_d, engine.d_optimizer)
            terms["loss_d"] = loss_d
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if engine.scaler is not None:
            engine.scaler.update()

        engine.state.output = step_output(
            images,
            labels,
            logits,
            loss,
            loss_ce=loss_ce,
            **terms,
            coverage=coverage,
            confidence_mean=confidence_mean,
            semi_active=float(semi_active),
        )
        if confidence is not None:
            engine.state.output["confidence"] = confidence
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

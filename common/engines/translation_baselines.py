"""Trainers of the baselines of Vorontsov et al., "Towards annotation-efficient segmentation via image-to-image
translation", MedIA 2022 (arXiv 1904.01636), Sec. 4.1, on :class:`~common.engines.translation.TranslationTrainerBase`
(the iteration they share with the proposed model). As the authors' (genseg ``ae_006_seg.py``, ``ae_006.py``,
``mean_teacher_006.py``) they run :class:`~common.networks.translation_baseline.TranslationBaselineNet`, whose decoders
are built as the common decoder (3x3, short skips, no spectral norm); :class:`SegmentationOnlyTrainer` runs the
proposed :class:`~common.networks.translation.TranslationSegNet`'s segmentation path as well.

* :class:`SegmentationOnlyTrainer`: ``lambda_seg * L_seg`` on the labelled images only (no A image is read).
* :class:`AutoencoderTrainer`: ``lambda_seg * L_seg + lambda_rec * (|G_ae(E(x_P)) - x_P| + |G_ae(E(x_A)) - x_A|) / 2``
  (the L1 mean over the P and A images, as the authors' ``ae_segmentation.py``) with the reconstruction decoder
  ``G_ae`` (no long skips).
* :class:`MeanTeacherTrainer`: ``lambda_seg * L_seg + lambda_consistency * MSE(sigmoid(S(x)), sigmoid(T(x)))`` over
  the unlabelled P images of the batch (the labelled ones only take ``L_seg``; A images are not used: the authors'
  ``mean_teacher_segmentation.py`` forwards them but takes the consistency over the P batch's unlabelled indices
  only), ``T`` the exponential moving average of ``S`` (ignite ``EMAHandler``), optionally with independent Gaussian
  input noise for student and teacher.

``L_seg`` is the soft Dice of the segmentation output on the labelled P images. The weights are used as given and
default to the authors' for each baseline (``lambda_seg`` 1; autoencoder ``lambda_rec`` 1; mean teacher
``lambda_consistency`` 0.01), not the proposed model's 0.01 and 50.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from ignite.handlers import EMAHandler
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from common.engines.translation import TranslationTrainerBase, _l1
from common.losses.soft_dice import soft_dice_loss
from common.networks.translation import TranslationSegNet
from common.networks.translation_baseline import TranslationBaselineNet

__all__ = ["AutoencoderTrainer", "MeanTeacherTrainer", "SegmentationOnlyTrainer"]


class SegmentationOnlyTrainer(TranslationTrainerBase):
    """The seg-only baseline: the soft Dice of the segmenter on the labelled P images of each batch.

    Args:
        device, max_epochs, train_data_loader, optimizer, trainer_kwargs: as
            :class:`~common.engines.translation.TranslationTrainerBase`.
        network: the :class:`~common.networks.translation_baseline.TranslationBaselineNet` (the authors' baseline)
            or the :class:`~common.networks.translation.TranslationSegNet` (its segmentation path alone).
        lambda_seg: weight of the soft Dice (1, the authors' ``ae_006_seg.py``).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: DataLoader,
        network: TranslationBaselineNet | TranslationSegNet,
        optimizer: Optimizer,
        lambda_seg: float = 1.0,
        **trainer_kwargs: Any,
    ) -> None:
        super().__init__(device, max_epochs, train_data_loader, network, optimizer, None, **trainer_kwargs)
        self.lambda_seg = lambda_seg
        self.weights = {"loss_seg": lambda_seg}

    def _terms(
        self, x_p: torch.Tensor, x_a: torch.Tensor | None, labels: torch.Tensor, mask: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        c, u, skips = self.network.encode(x_p)
        return {"loss_seg": self._segmentation_loss(c, u, skips, labels, mask)}, {}


class AutoencoderTrainer(TranslationTrainerBase):
    """The autoencoder baseline: the soft Dice on the labelled P images and the reconstruction of the P and A images
    by the network's reconstruction decoder.

    Args:
        device, max_epochs, train_data_loader, optimizer, trainer_kwargs: as
            :class:`~common.engines.translation.TranslationTrainerBase`.
        network: a :class:`~common.networks.translation_baseline.TranslationBaselineNet` built with
            ``reconstruction_decoder=True``.
        absent_data_loader: A batches ``{"image": (B', C, H, W)}``.
        lambda_seg: weight of the soft Dice (1, the authors' ``ae_006.py``).
        lambda_rec: weight of the mean L1 reconstruction error over the P and A images (1, ``ae_006.py``).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: DataLoader,
        network: TranslationBaselineNet,
        optimizer: Optimizer,
        absent_data_loader: DataLoader,
        lambda_seg: float = 1.0,
        lambda_rec: float = 1.0,
        **trainer_kwargs: Any,
    ) -> None:
        if absent_data_loader is None:
            raise ValueError("AutoencoderTrainer needs absent_data_loader.")
        if getattr(network, "reconstruction_decoder", None) is None:
            raise ValueError(
                "AutoencoderTrainer needs a TranslationBaselineNet built with reconstruction_decoder=True."
            )
        super().__init__(
            device, max_epochs, train_data_loader, network, optimizer, absent_data_loader, **trainer_kwargs
        )
        self.lambda_seg = lambda_seg
        self.lambda_rec = lambda_rec
        self.weights = {"loss_seg": lambda_seg, "loss_rec": lambda_rec}

    def _terms(
        self, x_p: torch.Tensor, x_a: torch.Tensor | None, labels: torch.Tensor, mask: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        net, size = self.network, x_p.shape[-2:]
        c_p, u_p, s_p = net.encode(x_p)
        c_a, u_a, _ = net.encode(x_a)
        rec_p, rec_a = _l1(net.autoencode(c_p, u_p, size), x_p), _l1(net.autoencode(c_a, u_a, size), x_a)
        terms = {
            "loss_seg": self._segmentation_loss(c_p, u_p, s_p, labels, mask),
            # the mean over the P and A images, as the authors' ae_segmentation.py (one batch of both)
            "loss_rec": (rec_p + rec_a) / 2,
        }
        return terms, {}


class MeanTeacherTrainer(TranslationTrainerBase):
    """The mean-teacher baseline: the soft Dice of the student on the labelled P images, the consistency of its
    sigmoid output with the teacher's on the unlabelled ones; no A image is read.

    Args:
        device, max_epochs, train_data_loader, optimizer, trainer_kwargs: as
            :class:`~common.engines.translation.TranslationTrainerBase`.
        network: the student, a :class:`~common.networks.translation_baseline.TranslationBaselineNet`.
        teacher_network: the teacher, ``(B, C, H, W)`` -> ``(B, 2, H, W)`` logits (``EMAHandler.ema_model``).
        teacher_update: the ``EMAHandler`` that makes ``teacher_network`` the moving average of ``network``
            (decay 0.99 in the authors' code), attached to this trainer after ``train_handlers`` (so a config that
            replaces ``train_handlers``, as ``multi_gpu_train.json``, keeps it); None: the teacher is updated
            elsewhere, or not at all.
        lambda_seg: weight of the soft Dice (1, the authors' ``mean_teacher_006.py``).
        lambda_consistency: weight of the consistency (0.01, ``mean_teacher_006.py``).
        consistency_noise_std: std of the Gaussian input noise of student and teacher (0: none).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: DataLoader,
        network: TranslationBaselineNet,
        optimizer: Optimizer,
        teacher_network: torch.nn.Module,
        teacher_update: EMAHandler | None = None,
        lambda_seg: float = 1.0,
        lambda_consistency: float = 0.01,
        consistency_noise_std: float = 0.0,
        **trainer_kwargs: Any,
    ) -> None:
        if teacher_network is None:
            raise ValueError("MeanTeacherTrainer needs teacher_network.")
        super().__init__(device, max_epochs, train_data_loader, network, optimizer, None, **trainer_kwargs)
        self.teacher_network = teacher_network
        self.lambda_seg = lambda_seg
        self.lambda_consistency = lambda_consistency
        self.consistency_noise_std = consistency_noise_std
        self.weights = {"loss_seg": lambda_seg, "loss_consistency": lambda_consistency}
        if teacher_update is not None:
            teacher_update.attach(self)

    def _terms(
        self, x_p: torch.Tensor, x_a: torch.Tensor | None, labels: torch.Tensor, mask: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return self._mean_teacher_terms(x_p, labels, mask), {}

    def _mean_teacher_terms(
        self, x_p: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Soft Dice of the student on the labelled P images, consistency with the teacher on the unlabelled ones."""
        noise = self.consistency_noise_std
        student_in = x_p + noise * torch.randn_like(x_p) if noise > 0 else x_p
        c, u, skips = self.network.encode(student_in)
        logits = self.network.segment_logits(c, u, skips, x_p.shape[-2:])
        with torch.no_grad():
            teacher_in = x_p + noise * torch.randn_like(x_p) if noise > 0 else x_p
            target = torch.softmax(self.teacher_network(teacher_in).float(), dim=1)[:, 1:]
        zero = torch.zeros((), device=x_p.device)
        seg = soft_dice_loss(torch.sigmoid(logits[mask].float()), labels[mask]) if bool(mask.any()) else zero
        unlabelled = ~mask
        consistency = (
            F.mse_loss(torch.sigmoid(logits[unlabelled].float()), target[unlabelled])
            if bool(unlabelled.any())
            else zero
        )
        return {"loss_seg": seg, "loss_consistency": consistency}

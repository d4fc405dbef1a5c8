"""Resume is exact: a run stopped after epoch k and resumed to N ends bit-identical to an uninterrupted run of N.

"Stopped" is a run of N epochs terminated once epoch k and its handlers (its checkpoint) are done; the rerun with the
same command resumes from its ``checkpoint_epoch=k.pt`` (``common.handlers.ResumableCheckpoint``; a kill mid-epoch is
``test_reliability.py``'s). A run with ``max_epochs`` k would not do: schedules such as ``PolynomialLR(total_iters=
max_epochs)`` depend on the number of epochs.

Both runs use the same seed, and every tensor of every network, optimiser and scheduler the trainer steps (both
networks and both optimisers of a GAN) is compared with ``torch.equal``: a resume that loses the random state (the
loader's shuffle order, the transforms' crops and flips, dropout), the place in a second data loader or in the
trainer's own loader (epochs shorter than the loader), an optimiser's moments or a scheduler's step differs in at
least one weight. The rerun must also train epochs k+1..N only: a fresh run of N epochs would end the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from bundle_utils import make_workflow
from ignite.engine import Engine, Events
from test_cluttered_mnist import write_small_mnist

from common.handlers import ResumableCheckpoint, epoch_checkpoints


@dataclass
class Case:
    """A bundle's resumable training: configs, tiny overrides, the epoch key, the trainer's id (run on its own when
    it is not the workflow's ``run``), and the config ids of what the trainer steps."""

    bundle: str
    configs: list[str]
    overrides: Callable[[Path, Path], dict]
    compared: list[str]
    epochs_key: str = "max_epochs"
    trainer: str | None = None
    ckpt_subdir: str = ""
    marks: list = field(default_factory=list)


def _common(tmp: Path) -> dict:
    return {"output_dir": str(tmp / "outputs"), "ckpt_dir": str(tmp / "models")}


CASES = {
    "supervised_seg": Case(
        "supervised_seg",
        ["train.json"],
        lambda tmp, _: {
            **_common(tmp),
            "demo_kwargs": {"num_cases": 6, "image_size": 64},
            "val_interval": 1,  # validation after the stop epoch too: it draws from torch's generator
            "patch_size": [32, 32],
            "batch_size": 4,
            "network_def#channels": [4, 8],
            "network_def#strides": [2],
        },
        ["network", "optimizer"],
    ),
    "adversarial_semi_seg": Case(
        "adversarial_semi_seg",
        ["train.json"],
        lambda tmp, _: {
            **_common(tmp),
            "demo_kwargs": {"num_cases": 4, "image_size": 32, "depth": 8},
            "semi_start_epoch": 0,
            "val_interval": 1,
            "patch_size": [32, 32],
            "batch_size": 4,
            "unlabeled_batch_size": 2,  # 4 unlabelled batches a pass, 2 drawn an epoch: the resume is mid-pass
            "network_def#channels": [8, 16, 32],
            "network_def#strides": [2, 2],
            "discriminator_channels": [8, 16, 32, 64],
        },
        ["network", "optimizer", "lr_scheduler", "discriminator", "d_optimizer", "d_lr_scheduler"],
    ),
    "acwe_unsup_seg": Case(
        "acwe_unsup_seg",
        ["train.json"],
        lambda tmp, _: {
            **_common(tmp),
            "demo_kwargs": {"num_cases": 4, "image_size": 32, "depth": 8},
            "val_interval": 1,
            "batch_size": 8,
        },
        ["network", "optimizer"],
    ),
    "translation_semi_seg": Case(
        "translation_semi_seg",
        ["train.json"],
        lambda tmp, mnist: {
            **_common(tmp),
            "mnist_source": str(mnist),
            "num_train": 16,
            "num_val": 4,
            "num_test": 4,
            "labelled_fraction": 0.25,
            "network_width": 0.125,
            "batch_size": 4,
            "absent_batch_size": 5,  # the absent-domain passes do not line up with the epochs
            "val_interval": 1,
        },
        ["network", "optimizer", "discriminator_a", "discriminator_p", "d_optimizer"],
        marks=[pytest.mark.slow],
    ),
    "af_seg": Case(
        "af_seg",
        ["train.json"],
        lambda tmp, _: {
            **_common(tmp),
            "demo_kwargs": {"num_cases": 4, "image_size": 32},
            "val_interval": 1,
            "patch_size": [32, 32],
            "batch_size": 2,
            "dip_steps": 3,
            "background#dsp_max_steps": 3,
        },
        ["network", "generator", "discriminator", "g_optimizer", "d_optimizer", "g_scheduler", "d_scheduler"],
        marks=[pytest.mark.slow],
    ),
    "mipr_auto_annotation": Case(  # its generator (G) training, the stage of the loop that resumes by epoch
        "mipr_auto_annotation",
        ["train.json"],
        lambda tmp, _: {
            **_common(tmp),
            "demo_kwargs": {"num_cases": 16, "image_size": 32},
            "image_size": [32, 32],
            "labelled_fraction": 0.5,
            "generator_batch_size": 2,
            "generator_channels": [8, 16],
            "spade_hidden_channels": 8,
            "discriminator_channels": 8,
            "discriminator_layers": 2,
            "discriminator_num_d": 1,
        },
        ["generator#network", "generator#discriminator", "generator#optimizer_g", "generator#optimizer_d"],
        epochs_key="generator_epochs",
        trainer="generator#trainer",
        ckpt_subdir="generator_training",
    ),
    "unimatch_semi_seg": Case(  # the unlabelled loader drives the epochs; the labelled one is an endless pass
        "unimatch_semi_seg",
        ["train.json"],
        lambda tmp, _: {
            **_common(tmp),
            "demo_kwargs": {"num_cases": 4, "image_size": 32, "depth": 8},
            "labelled_fraction": 0.5,
            "val_interval": 1,
            "patch_size": [32, 32],
            "batch_size": 3,  # 3 of 8 labelled slices: the labelled pass is mid-way at the stop
            "unlabeled_batch_size": 4,
            "semi_threshold": 0.0,  # every pixel confident: the unlabelled terms (and their randomness) from step 1
            "network_def#features": [8, 16, 16, 32, 32, 8],
        },
        ["network", "optimizer", "lr_scheduler"],
    ),
}


def _train(
    case: Case, tmp: Path, mnist: Path, epochs: int, stop: int | None = None, **extra: Any
) -> tuple[dict[str, dict], list[int]]:
    """Run ``case`` to ``epochs`` (resuming from ``tmp``'s checkpoint if there is one), or stop it after epoch
    ``stop``; the compared state dicts and the epochs this run trained."""
    overrides = {**case.overrides(tmp, mnist), case.epochs_key: epochs, **extra}
    workflow = make_workflow(case.bundle, case.configs, **overrides)
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content(case.trainer or "train#trainer")
    trained: list[int] = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda engine: trained.append(engine.state.epoch))
    if stop is not None:  # the epoch's handlers (its checkpoint) run, then the run ends as a killed one would
        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=stop), lambda engine: engine.terminate())
    if case.trainer is None:
        workflow.run()
    else:
        trainer.run()
    states = {key: workflow.parser.get_parsed_content(key).state_dict() for key in case.compared}
    workflow.finalize()
    return states, trained


def _differences(a: Any, b: Any, where: str = "") -> list[str]:
    """The paths at which two (nested) state dicts differ: tensors by ``torch.equal``, other values by ``==``."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
        return [] if same and torch.equal(a, b) else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where} keys"]
        return [d for k in a for d in _differences(a[k], b[k], f"{where}/{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where} length"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [where]


def assert_resume_exact(case: Case, tmp: Path, mnist: Path, stop: int = 1, total: int = 3, **extra: Any) -> None:
    """An uninterrupted run of ``total`` epochs and one stopped after ``stop`` and resumed end bit-identical."""
    uninterrupted, _ = _train(case, tmp / "uninterrupted", mnist, total, **extra)
    folder = tmp / "resumed" / "models" / case.ckpt_subdir
    _, first_part = _train(case, tmp / "resumed", mnist, total, stop=stop, **extra)
    assert first_part == list(range(1, stop + 1))
    assert [p.name for p in epoch_checkpoints(folder)] == [f"checkpoint_epoch={stop}.pt"]
    resumed, second_part = _train(case, tmp / "resumed", mnist, total, **extra)
    assert second_part == list(range(stop + 1, total + 1)), "the rerun did not resume (a fresh run ends the same)"
    assert [p.name for p in epoch_checkpoints(folder)] == [f"checkpoint_epoch={total}.pt"]
    differences = [d for key in case.compared for d in _differences(uninterrupted[key], resumed[key], key)]
    assert not differences, f"{len(differences)} tensors differ after the resume, e.g. {differences[:5]}"


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_small_mnist(tmp_path_factory.mktemp("mnist"), num_train=60, num_test=10)


@pytest.mark.parametrize("name", [pytest.param(n, marks=c.marks) for n, c in CASES.items()])
def test_stopped_and_resumed_equals_uninterrupted(name: str, tmp_path: Path, mnist_dir: Path):
    torch.set_num_threads(1)
    assert_resume_exact(CASES[name], tmp_path, mnist_dir)


def test_resume_mid_pass_of_the_loader(tmp_path: Path, mnist_dir: Path):
    """Epochs shorter than the loader (``epoch_length`` 1 of 4 batches, as the translation baselines and benchmark
    runs set it): the stop falls inside a pass over the loader, and the resumed run goes on with that pass."""
    torch.set_num_threads(1)
    assert_resume_exact(CASES["supervised_seg"], tmp_path, mnist_dir, batch_size=1, **{"train#trainer#epoch_length": 1})


@pytest.mark.parametrize(
    "make, final_lr",
    [
        (lambda o, n: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=n, power=0.9), 0.0),
        (lambda o, n: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=n), 0.0),
    ],
)
def test_resume_with_more_epochs_follows_this_runs_schedule(tmp_path: Path, make: Callable, final_lr: float) -> None:
    """A run of 2 epochs (the schedule ends there: learning rate 0), resumed with max_epochs 4 (as MONAI Label's
    ``resume: true`` with a larger ``max_epochs``): the scheduler's length becomes 4 epochs, not the checkpoint's 2, so
    epochs 3-4 train at the rates of a 4-epoch schedule (poly: not 0; cosine: not rising again), ending at 0."""

    def run(max_epochs: int) -> list[float]:
        weight = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([weight], lr=0.1)
        scheduler = make(optimizer, max_epochs)
        rates: list[float] = []

        def step(engine: Engine, batch: object) -> None:
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()

        trainer = Engine(step)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: scheduler.step())
        save = {"weight": torch.nn.ParameterList([weight]), "optimizer": optimizer, "lr_scheduler": scheduler}
        ResumableCheckpoint(str(tmp_path), save).attach(trainer)
        trainer.run([0], max_epochs=max_epochs)
        return rates

    def planned(epochs: int) -> list[float]:
        """The rate of each epoch of an uninterrupted schedule of ``epochs`` epochs."""
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        scheduler, rates = make(optimizer, epochs), []
        for _ in range(epochs):
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(final_lr, abs=1e-12)
        return rates

    assert run(2) == pytest.approx(planned(2))
    resumed = run(4)  # epochs 3 and 4 only
    assert resumed == pytest.approx(planned(4)[2:]) and resumed[0] > 0.01

"""Every training that finishes leaves a ``models/model.pt`` that inference loads (issue 29).

``common.handlers.FinalModelSaver`` on small Ignite engines (no validation, a stale file, validation, a resumed run,
``select_by_key_metric`` false, a non-zero DDP rank), then every bundle trained for fewer epochs than its
``val_interval``: its ``inference.json`` loads the ``model.pt`` left behind (the loaded weights are the trained
network's) and segments one small image; and a validation that ran keeps the best validated network.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import ignite.distributed as idist
import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_utils import make_workflow, run_workflow
from ignite.engine import Engine, Events
from PIL import Image
from test_cluttered_mnist import write_small_mnist
from torch import nn

from common.handlers import AtomicCheckpointSaver, FinalModelSaver, ResumableCheckpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def final_log() -> Iterator[list[str]]:
    """The messages of ``common.handlers.final_model`` (a handler on its own logger: the bundles' logging.conf
    replaces the root logger's handlers, and with them pytest's)."""
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    log = logging.getLogger("common.handlers.final_model")
    handler, level = _Collect(level=logging.INFO), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield messages
    log.removeHandler(handler)
    log.setLevel(level)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


# ---- the handler on small engines -----------------------------------------------------------------------------


def _training(
    tmp: Path, val_interval: int, select_by_key_metric: bool = True, resume_at: int = 0
) -> tuple[Engine, nn.Module, dict[int, dict]]:
    """A trainer whose every iteration adds 1 to a linear layer's weights, a validator run every ``val_interval``
    epochs (score = the epoch, so the last validation is the best) with the bundles' key-metric saver, the
    :class:`FinalModelSaver` as the bundles wire it; ``resume_at``: the trainer starts at that epoch, as after
    ``ResumableCheckpoint``. Returns the trainer, the network and the network at each validation."""
    network = nn.Linear(2, 2)

    def step(engine: Engine, batch: object) -> None:
        with torch.no_grad():
            network.weight.add_(1.0)

    trainer, validator = Engine(step), Engine(lambda engine, batch: None)
    validated: dict[int, dict] = {}

    def validate(engine: Engine) -> None:
        validator.run([0])
        validated[engine.state.epoch] = _state(network)

    validator.add_event_handler(Events.EPOCH_COMPLETED, lambda v: v.state.metrics.update(score=trainer.state.epoch))
    trainer.add_event_handler(Events.EPOCH_COMPLETED(every=val_interval), validate)
    if select_by_key_metric:
        AtomicCheckpointSaver(
            save_dir=str(tmp),
            save_dict={"model": network},
            save_key_metric=True,
            key_metric_name="score",
            key_metric_filename="model.pt",
        ).attach(validator)
    if resume_at:
        trainer.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "epoch", resume_at))
    FinalModelSaver(
        str(tmp), {"model": network}, validator, select_by_key_metric=select_by_key_metric, val_interval=val_interval
    ).attach(trainer)
    return trainer, network, validated


def test_no_validation_writes_the_last_network_over_a_stale_file(tmp_path: Path, final_log: list[str]):
    torch.save({"weight": torch.zeros(1)}, tmp_path / "model.pt")  # an older training's model
    trainer, network, validated = _training(tmp_path, val_interval=3)
    trainer.run([0, 0], max_epochs=2)
    assert not validated
    assert _equal(torch.load(tmp_path / "model.pt", weights_only=True), _state(network))
    assert final_log == [
        f"no validation ran in this training (val_interval 3 > max_epochs 2): {tmp_path / 'model.pt'} is the last "
        "network (epoch 2)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # atomic: no temporary file left


def test_validation_keeps_the_best_validated_network(tmp_path: Path, final_log: list[str]):
    trainer, network, validated = _training(tmp_path, val_interval=2)
    trainer.run([0, 0], max_epochs=3)
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert list(validated) == [2] and _equal(saved, validated[2]) and not _equal(saved, _state(network))
    assert len(final_log) == 1 and "is the best validated network of this run" in final_log[0]


@pytest.mark.parametrize("resume_at, val_interval, kept", [(2, 2, True), (1, 3, False)])
def test_resumed_run_without_validation(
    resume_at: int, val_interval: int, kept: bool, tmp_path: Path, final_log: list[str]
):
    """Resumed after the validation at epoch 2 (val_interval 2) and ending at 3: the best validated ``model.pt`` of
    the epochs before the resume is kept; resumed at epoch 1 of 2 with val_interval 3 (nothing validated), the last
    network replaces whatever ``model.pt`` there was."""
    before = {"weight": torch.full((2, 2), 7.0), "bias": torch.zeros(2)}
    torch.save(before, tmp_path / "model.pt")
    trainer, network, validated = _training(tmp_path, val_interval=val_interval, resume_at=resume_at)
    trainer.run([0, 0], max_epochs=resume_at + 1)
    assert not validated
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert _equal(saved, before) == kept and _equal(saved, _state(network)) != kept
    assert len(final_log) == 1
    assert ("is kept, the best validated network of the epochs before the resume" in final_log[0]) == kept


def test_select_by_key_metric_false_writes_the_last_network(tmp_path: Path, final_log: list[str]):
    trainer, network, validated = _training(tmp_path, val_interval=1, select_by_key_metric=False)
    trainer.run([0], max_epochs=2)
    assert list(validated) == [1, 2]
    assert _equal(torch.load(tmp_path / "model.pt", weights_only=True), _state(network))
    assert final_log == [f"select_by_key_metric is false: {tmp_path / 'model.pt'} is the last network (epoch 2)"]


def test_only_rank_0_writes(tmp_path: Path, final_log: list[str], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(idist, "get_rank", lambda: 1)
    trainer, _, _ = _training(tmp_path, val_interval=3)
    trainer.run([0], max_epochs=1)
    assert not (tmp_path / "model.pt").exists() and final_log == []


def test_a_failed_run_writes_nothing(tmp_path: Path, final_log: list[str]):
    trainer, _, _ = _training(tmp_path, val_interval=3)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        trainer.run([0], max_epochs=1)
    assert not (tmp_path / "model.pt").exists() and final_log == []


# ---- every bundle: a training shorter than val_interval, then its inference ----------------------------------


def _png(size: tuple[int, ...]) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        Image.fromarray((np.random.default_rng(0).random(size) * 255).astype(np.uint8)).save(folder / "img.png")

    return write


def _nifti(folder: Path) -> None:
    image = np.random.default_rng(0).normal(size=(32, 32, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.eye(4)), folder / "vol.nii.gz")


SMALL_UNET = {"network_def#channels": [8, 16, 32], "network_def#strides": [2, 2]}
UNIMATCH_NET = {"network_def#features": [8, 16, 16, 32, 32, 8]}
NO_VALIDATION = {"max_epochs": 1, "val_interval": 2}
# bundle -> (training configs, training overrides, inference overrides, input writer); the settings of each bundle's
# own test file, with one epoch and val_interval 2
BUNDLES: dict[str, tuple[list[str], dict, dict, Callable[[Path], None]]] = {
    "supervised_seg": (
        ["train.json"],
        {"demo_kwargs": {"num_cases": 6, "image_size": 64}, "patch_size": [64, 64], "batch_size": 4},
        {"patch_size": [64, 64]},
        _png((40, 36)),
    ),
    "acwe_unsup_seg": (  # mode 4 selects by validation Dice (mode 1, label-free, keeps its last network)
        ["train.json", "mode4_joint.json"],
        {"demo_kwargs": {"num_cases": 4, "image_size": 32, "depth": 8}, "batch_size": 8},
        {},
        _png((40, 36)),
    ),
    "adversarial_semi_seg": (
        ["train.json"],
        {
            "demo_kwargs": {"num_cases": 4, "image_size": 32, "depth": 8},
            "semi_start_epoch": 0,
            "patch_size": [32, 32],
            "batch_size": 4,
            "unlabeled_batch_size": 4,
            "discriminator_channels": [8, 16, 32, 64],
            **SMALL_UNET,
        },
        {"patch_size": [32, 32], **SMALL_UNET},
        _nifti,
    ),
    "translation_semi_seg": (
        ["train.json"],
        {
            "num_train": 40,
            "num_val": 6,
            "num_test": 8,
            "labelled_fraction": 0.1,
            "network_width": 0.125,
            "batch_size": 4,
            "absent_batch_size": 4,
            "epoch_length": 2,
        },
        {"network_width": 0.125},
        _png((48, 48)),
    ),
    "af_seg": (  # its validation only monitors (weak labels): model.pt is always the last network
        ["train.json"],
        {
            "demo_kwargs": {"num_cases": 4, "image_size": 32},
            "patch_size": [32, 32],
            "batch_size": 2,
            "dip_steps": 3,
            "background#dsp_max_steps": 3,
        },
        {},
        _png((40, 36)),
    ),
    "mipr_auto_annotation": (  # round 0 only: the loop writes model.pt from the last round's last network
        ["train.json"],
        {
            "demo_kwargs": {"num_cases": 16, "image_size": 32},
            "image_size": [32, 32],
            "labelled_fraction": 0.5,
            "num_rounds": 0,
            "batch_size": 4,
            "generator_channels": [8, 16],  # built though round 0 does not train it
            "spade_hidden_channels": 8,
            "discriminator_channels": 8,
            "discriminator_layers": 2,
            "discriminator_num_d": 1,
            **SMALL_UNET,
        },
        {"image_size": [32, 32], **SMALL_UNET},
        _png((40, 36, 3)),
    ),
    "unimatch_semi_seg": (  # select_by_key_metric false (the authors keep the last network): always the last one
        ["train.json"],
        {
            "demo_kwargs": {"num_cases": 4, "image_size": 32, "depth": 8},
            "labelled_fraction": 0.5,
            "patch_size": [32, 32],
            "batch_size": 4,
            "unlabeled_batch_size": 4,
            **UNIMATCH_NET,
        },
        {"patch_size": [32, 32], **UNIMATCH_NET},
        _nifti,
    ),
}


# variants with a train#handlers or network of their own: (bundle, training config, inference configs)
VARIANTS = {
    "adversarial_semi_seg/supervised_only": ("adversarial_semi_seg", "supervised_only.json", ["inference.json"]),
    "translation_semi_seg/seg_only": (
        "translation_semi_seg",
        "seg_only.json",
        ["inference.json", "inference_baseline.json"],
    ),
}
CASES = {name: (name, None, ["inference.json"]) for name in BUNDLES} | VARIANTS


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_small_mnist(tmp_path_factory.mktemp("mnist"), num_train=200, num_test=20)


@pytest.mark.parametrize("case", list(CASES))
def test_training_shorter_than_val_interval_leaves_a_model_inference_loads(
    case: str, tmp_path: Path, mnist_dir: Path, final_log: list[str]
):
    torch.set_num_threads(1)
    bundle, variant, inference_configs = CASES[case]
    configs, train_overrides, infer_overrides, write_input = BUNDLES[bundle]
    configs = configs + ([variant] if variant else [])
    if bundle == "translation_semi_seg":
        train_overrides = {**train_overrides, "mnist_source": str(mnist_dir)}
    models = tmp_path / "models"
    models.mkdir()
    torch.save({"stale": torch.zeros(1)}, models / "model.pt")  # an older run's file: must be replaced
    common = {"output_dir": str(tmp_path / "outputs"), "ckpt_dir": str(models)}
    training = run_workflow(bundle, configs, **common, **train_overrides, **NO_VALIDATION)
    trained = _state(training.parser.get_parsed_content("network"))
    if bundle != "mipr_auto_annotation":  # MIPR's loop writes model.pt itself and logs it (common.engines.mipr_loop)
        assert len(final_log) == 1 and "model.pt is the last network" in final_log[0], final_log
        if training.parser.get("select_by_key_metric", False):  # else the last network, validated or not
            assert final_log[0].startswith("no validation ran in this training (val_interval 2 > max_epochs 1)")

    inputs, out = tmp_path / "inputs", tmp_path / "pred"
    inputs.mkdir()
    write_input(inputs)
    inference = run_workflow(
        bundle,
        inference_configs,
        "infer",
        dataset_dir=str(inputs),
        output_dir=str(out),
        ckpt_dir=str(models),
        **infer_overrides,
    )
    assert _equal(_state(inference.parser.get_parsed_content("network")), trained)
    assert [p for p in out.rglob("*") if "_seg" in p.name], "inference wrote no mask"


def test_validation_that_ran_keeps_the_best_validated_network(tmp_path: Path, final_log: list[str]):
    """supervised_seg for 3 epochs, validating at epoch 2 only: model.pt is the network of that validation, not the
    last one, and the log says so."""
    torch.set_num_threads(1)
    _, train_overrides, _, _ = BUNDLES["supervised_seg"]
    overrides = {"output_dir": str(tmp_path / "outputs"), "ckpt_dir": str(tmp_path / "models"), **train_overrides}
    workflow = make_workflow("supervised_seg", ["train.json"], **overrides, max_epochs=3, val_interval=2)
    workflow.initialize()
    network = workflow.parser.get_parsed_content("network")
    validated: dict[int, dict] = {}
    workflow.parser.get_parsed_content("validate#evaluator").add_event_handler(
        Events.COMPLETED, lambda e: validated.update({e.state.epoch: _state(network)})
    )
    workflow.run()
    workflow.finalize()
    saved = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert list(validated) == [2] and _equal(saved, validated[2]) and not _equal(saved, _state(network))
    assert len(final_log) == 1 and "is the best validated network of this run: val_mean_dice" in final_log[0]
    assert "at epoch 2" in final_log[0]


def test_resumed_bundle_run_keeps_the_model_of_its_earlier_validation(tmp_path: Path, final_log: list[str]):
    """supervised_seg validates at epoch 2 of 2; resumed to 3 epochs (``ResumableCheckpoint``), the run validates
    no more (val_interval 2): model.pt stays the epoch-2 network, not the last one."""
    torch.set_num_threads(1)
    _, train_overrides, _, _ = BUNDLES["supervised_seg"]
    overrides = {"output_dir": str(tmp_path / "outputs"), "ckpt_dir": str(tmp_path / "models"), **train_overrides}
    run_workflow("supervised_seg", ["train.json"], **overrides, max_epochs=2, val_interval=2)
    validated = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    resumed = run_workflow("supervised_seg", ["train.json"], **overrides, max_epochs=3, val_interval=2)
    assert resumed.parser.get_parsed_content("train#trainer").state.epoch == 3
    saved = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert _equal(saved, validated) and not _equal(saved, _state(resumed.parser.get_parsed_content("network")))
    assert "resumed at epoch 2 of 3, val_interval 2" in final_log[-1] and "is kept" in final_log[-1]


@pytest.mark.slow
def test_torchrun_rank_0_writes_the_last_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Two gloo ranks, supervised_seg without validation: rank 0 alone logs and writes the unwrapped network."""
    import torchrun_cases

    overrides = {**torchrun_cases.OVERRIDES["supervised_seg"], "val_interval": 2}
    monkeypatch.setitem(torchrun_cases.OVERRIDES, "supervised_seg", overrides)
    result, missing = torchrun_cases.run_case("supervised_seg", tmp_path, timeout=400)
    assert result.ok and not missing, result.report()
    lines = {
        rank: [line for line in log.splitlines() if "common.handlers.final_model" in line]
        for rank, log in result.rank_logs.items()
    }
    assert len(lines[0]) == 1 and "no validation ran in this training" in lines[0][0] and lines[1] == []
    saved = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    network = torch.load(tmp_path / "models" / "checkpoint_epoch=1.pt", map_location="cpu", weights_only=False)
    assert _equal(saved, network["network"])


def test_resumed_run_replaces_model_only_with_a_better_validated_network(tmp_path: Path):
    """Validation scores 0.9 at epoch 1, then 0.5 at epoch 2; the run is killed after epoch 1 and resumed with the
    same command (new engines, ``ResumableCheckpoint``): the epoch-2 network, worse than the epoch-1 one, must not
    replace ``model.pt`` (the key-metric saver's best score travels in the epoch checkpoint)."""
    scores = {1: 0.9, 2: 0.5}

    def run(max_epochs: int) -> nn.Module:
        network = nn.Linear(2, 2)

        def step(engine: Engine, batch: object) -> None:
            with torch.no_grad():
                network.weight.add_(1.0)

        trainer, validator = Engine(step), Engine(lambda engine, batch: None)
        validator.add_event_handler(
            Events.EPOCH_COMPLETED, lambda v: v.state.metrics.update(score=scores[trainer.state.epoch])
        )
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: validator.run([0]))
        AtomicCheckpointSaver(
            save_dir=str(tmp_path), save_dict={"model": network}, save_key_metric=True, key_metric_name="score",
            key_metric_filename="model.pt",
        ).attach(validator)  # fmt: skip
        ResumableCheckpoint(str(tmp_path), {"network": network}, validator=validator).attach(trainer)
        trainer.run([0], max_epochs=max_epochs)
        return network

    first = _state(run(1))
    assert _equal(torch.load(tmp_path / "model.pt", weights_only=True), first)
    resumed = run(2)
    assert torch.allclose(resumed.weight.detach(), first["weight"] + 1.0)  # resumed at epoch 1, trained epoch 2
    assert _equal(torch.load(tmp_path / "model.pt", weights_only=True), first)


@pytest.mark.parametrize("bundle", sorted(p.name for p in (REPO / "bundles").iterdir() if p.is_dir()))
def test_bundles_with_a_key_metric_saver_keep_its_best_score_across_a_resume(bundle: str):
    """Every training config that keeps the best validated network (``save_key_metric``) hands its validator to
    ``ResumableCheckpoint``, so the best score survives a resume (the test above)."""
    text = (REPO / "bundles" / bundle / "configs" / "train.json").read_text(encoding="utf-8")
    if '"save_key_metric"' not in text:
        pytest.skip(f"{bundle} keeps the last network (no key-metric saver)")
    config = json.loads(text)
    handlers = [h for h in config["train"]["handlers"] if "ResumableCheckpoint" in str(h.get("_target_"))]
    assert len(handlers) == 1 and handlers[0].get("validator") == "@validate#evaluator", handlers

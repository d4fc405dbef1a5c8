"""Atomic writes: a failed or killed write never leaves a half file under the real name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointSaver
from monai.transforms import LoadImage

from common.atomic_write import (
    atomic_path,
    publish_folder,
    remove_partial_files,
    save_npy_atomic,
    save_png_atomic,
    save_torch_atomic,
    write_binary_atomic,
    write_json_atomic,
    write_text_atomic,
)
from common.handlers import AtomicCheckpointSaver, ResumableCheckpoint


class _WriteFailure(RuntimeError):
    pass


def _half_write_then_fail(obj: object, f: object, *args: object, **kwargs: object) -> None:
    """Stands in for ``torch.save`` interrupted mid-file: some bytes written, then an error."""
    Path(f).write_bytes(b"PK\x03\x04 half a zip")
    raise _WriteFailure("interrupted")


def test_atomic_path_replaces_on_success_and_keeps_the_old_file_on_failure(tmp_path: Path):
    target = tmp_path / "sub" / "notes.txt"
    write_text_atomic(target, "first")
    assert target.read_text() == "first"
    with pytest.raises(_WriteFailure):
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp.name.startswith(".") and tmp.suffix == ".txt"
            tmp.write_text("half")
            raise _WriteFailure("interrupted")
    assert target.read_text() == "first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["notes.txt"]


def test_remove_partial_files_deletes_only_what_killed_writers_left(tmp_path: Path):
    (tmp_path / ".model.partial-123.pt").write_bytes(b"half")
    (tmp_path / "model.pt").write_bytes(b"whole")
    (tmp_path / ".hidden_user_file").write_bytes(b"keep")
    removed = remove_partial_files(tmp_path)
    assert [p.name for p in removed] == [".model.partial-123.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden_user_file", "model.pt"]
    assert remove_partial_files(tmp_path / "missing") == []


def _engine_with_saver(ckpt_dir: Path, network: torch.nn.Module) -> Engine:
    engine = Engine(lambda e, b: None)
    AtomicCheckpointSaver(
        save_dir=str(ckpt_dir), save_dict={"model": network}, save_final=True, final_filename="model.pt"
    ).attach(engine)
    return engine


def test_checkpoint_saver_interrupted_write_keeps_the_previous_model(tmp_path: Path, monkeypatch):
    first = torch.nn.Linear(2, 1)
    _engine_with_saver(tmp_path, first).run([0], max_epochs=1)
    before = (tmp_path / "model.pt").read_bytes()
    monkeypatch.setattr(torch, "save", _half_write_then_fail)
    with pytest.raises(_WriteFailure):
        _engine_with_saver(tmp_path, torch.nn.Linear(2, 1)).run([0], max_epochs=1)
    assert (tmp_path / "model.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    monkeypatch.undo()
    loaded = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert torch.equal(loaded["weight"], first.weight.detach())


def test_a_run_that_raises_keeps_the_previous_final_model(tmp_path: Path):
    """MONAI's saver deletes model.pt and writes the half-trained network when training raises; this one keeps the
    last completed run's file."""
    first = torch.nn.Linear(2, 1)
    _engine_with_saver(tmp_path, first).run([0], max_epochs=1)
    second = torch.nn.Linear(2, 1)
    engine = _engine_with_saver(tmp_path, second)

    @engine.on(Events.ITERATION_COMPLETED)
    def fail(_: Engine) -> None:
        raise _WriteFailure("non-finite loss")

    with pytest.raises(_WriteFailure, match="non-finite"):
        engine.run([0], max_epochs=1)
    loaded = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert torch.equal(loaded["weight"], first.weight.detach())
    assert not torch.equal(loaded["weight"], second.weight.detach())


def test_checkpoint_saver_attach_removes_files_a_killed_run_left(tmp_path: Path):
    (tmp_path / ".checkpoint_epoch=2.partial-99.pt").write_bytes(b"half")
    engine = Engine(lambda e, b: None)
    ResumableCheckpoint(str(tmp_path), {"model": torch.nn.Linear(2, 1)}).attach(engine)
    engine.run([0], max_epochs=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=2.pt"]
    state = torch.load(tmp_path / "checkpoint_epoch=2.pt", map_location="cpu", weights_only=False)
    assert state["trainer"]["iteration"] == 2


def test_atomic_saver_writes_the_files_monai_writes(tmp_path: Path):
    for saver_class, folder in ((CheckpointSaver, tmp_path / "monai"), (AtomicCheckpointSaver, tmp_path / "atomic")):
        engine = Engine(lambda e, b: None)
        network = torch.nn.Linear(2, 1)
        kwargs = {"save_interval": 1, "n_saved": 2, "save_final": True, "final_filename": "final.pt"}
        saver_class(
            save_dir=str(folder), save_dict={"model": network, "opt": torch.optim.SGD(network.parameters())}, **kwargs
        ).attach(engine)
        engine.run([0], max_epochs=3)
    assert sorted(p.name for p in (tmp_path / "atomic").iterdir()) == sorted(
        p.name for p in (tmp_path / "monai").iterdir()
    )


def test_publish_folder_moves_once_and_keeps_the_first_published(tmp_path: Path):
    """A second process publishing the same data set keeps the first one's folder and removes its own; a final
    folder without the marker (something else is in the way) is an error, not silently kept."""
    first, second, final = tmp_path / ".a.tmp", tmp_path / ".b.tmp", tmp_path / "set"
    for folder, text in ((first, "first"), (second, "second")):
        folder.mkdir()
        (folder / "index.json").write_text(text)
    assert publish_folder(first, final, "index.json") == final and not first.exists()
    assert publish_folder(second, final, "index.json") == final and not second.exists()
    assert (final / "index.json").read_text() == "first"
    blocked, unmarked = tmp_path / ".c.tmp", tmp_path / "other"
    blocked.mkdir()
    (blocked / "index.json").write_text("x")
    unmarked.mkdir()
    (unmarked / "something").write_text("y")
    with pytest.raises(OSError):
        publish_folder(blocked, unmarked, "index.json")
    assert blocked.is_dir()


def test_every_writer_round_trips_and_leaves_no_partial_file(tmp_path: Path):
    """The one home of the project's writers: JSON, npy, torch, binary and PNG (read back by MONAI as written)."""
    write_json_atomic(tmp_path / "a.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": [1, 2]}
    array = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    save_npy_atomic(tmp_path / "a.npy", array)
    assert np.array_equal(np.load(tmp_path / "a.npy"), array)
    save_torch_atomic(tmp_path / "a.pt", {"w": torch.ones(2)})
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True)["w"], torch.ones(2))
    write_binary_atomic(tmp_path / "a.bin", lambda f: f.write(b"abc"))
    assert (tmp_path / "a.bin").read_bytes() == b"abc"
    save_png_atomic(tmp_path / "a.png", array * 20)
    back = LoadImage(image_only=True, ensure_channel_first=True)(str(tmp_path / "a.png"))
    assert np.array_equal(np.asarray(back), array * 20)
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]

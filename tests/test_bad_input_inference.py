"""Bad input through a bundle's real inference workflow (``supervised_seg``'s ``inference.json``, a randomly initialised
``model.pt``): NaN/Inf pixels and RGB/RGBA pictures into a one-channel bundle stop with an error naming the file and
what was expected, and no mask is written; 16-bit PNG/TIFF are read with their full range and constant images are
normalised without dividing by zero, and both get their masks."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_utils import make_workflow, run_workflow
from PIL import Image

BUNDLE = "supervised_seg"


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> Path:
    """A folder holding ``model.pt`` with random weights: what is tested is the input handling, not the masks."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models")
    network = make_workflow(BUNDLE, ["inference.json"], "infer").parser.get_parsed_content("network_def")
    torch.save(network.state_dict(), folder / "model.pt")
    return folder


def _infer(inputs: Path, out: Path, ckpt_dir: Path) -> None:
    torch.set_num_threads(1)
    run_workflow(
        BUNDLE,
        ["inference.json"],
        "infer",
        dataset_dir=str(inputs),
        output_dir=str(out),
        ckpt_dir=str(ckpt_dir),
        patch_size=[16, 16],
    )


def _chain(error: BaseException) -> str:
    """The messages of an exception and its causes (MONAI wraps a transform's error in two RuntimeErrors)."""
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    return " <- ".join(messages)


def _preprocessed(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The image as ``inference.json``'s loader reads it and as its whole preprocessing hands it to the network."""
    preprocessing = make_workflow(BUNDLE, ["inference.json"], "infer").parser.get_parsed_content("preprocessing")
    loaded = preprocessing.transforms[0]({"image": str(path)})["image"]
    return loaded, preprocessing({"image": str(path)})["image"]


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_nan_or_inf_pixels_stop_naming_the_file(bad: str, ckpt_dir: Path, tmp_path: Path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    volume = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    volume[4, 5, 1] = np.nan if bad == "nan" else -np.inf
    nib.save(nib.Nifti1Image(volume, np.eye(4)), inputs / f"{bad}.nii.gz")
    with pytest.raises(RuntimeError) as error:
        _infer(inputs, tmp_path / "out", ckpt_dir)
    counts = "(1 NaN, 0 Inf)" if bad == "nan" else "(0 NaN, 1 Inf)"
    assert f"{inputs / bad}.nii.gz: image holds 1 NaN/Inf value(s) {counts}; expected finite" in _chain(error.value)
    assert not list((tmp_path / "out").rglob("*.nii.gz"))


@pytest.mark.parametrize("mode,channels", [("RGB", 3), ("RGBA", 4)])
def test_rgb_picture_into_a_grey_bundle_stops_with_the_fix(mode: str, channels: int, ckpt_dir: Path, tmp_path: Path):
    """Pictures are not converted silently: the message says to convert to grey or use ``num_channels`` 3/4."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    pixels = (np.random.default_rng(1).random((16, 16, channels)) * 255).astype(np.uint8)
    Image.fromarray(pixels, mode=mode).save(inputs / "photo.png")
    with pytest.raises(RuntimeError) as error:
        _infer(inputs, tmp_path / "out", ckpt_dir)
    message = _chain(error.value)
    assert f"{inputs / 'photo.png'}: expected 1 channel(s), got {channels}" in message
    assert f"{mode} image given to a one-channel (grey) bundle; convert it to grey" in message
    assert f"num_channels {channels}" in message
    assert not list((tmp_path / "out").rglob("*.nii.gz"))


def test_16_bit_png_and_tiff_keep_their_full_range(ckpt_dir: Path, tmp_path: Path):
    """A 16-bit picture is read as 0..65535 (not clipped to 8 bits): it normalises, and so segments, exactly as its
    8-bit version (the normalisation is scale-invariant); clipped, it would be a nearly flat image."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    rows, cols = np.mgrid[0:16, 0:20]
    grey8 = (rows * 8 + cols * 4).astype(np.uint8)
    grey8[4:10, 6:14] = 255
    grey16 = grey8.astype(np.uint16) * 257  # 255 -> 65535
    Image.fromarray(grey8).save(inputs / "a8.png")
    Image.fromarray(grey16).save(inputs / "a16.png")
    Image.fromarray(grey16).save(inputs / "b16.tif")
    loaded8, ready8 = _preprocessed(inputs / "a8.png")
    for name in ("a16.png", "b16.tif"):
        loaded, ready = _preprocessed(inputs / name)
        assert float(loaded.max()) == 65535.0 and float(loaded.min()) == 0.0
        np.testing.assert_array_equal(np.asarray(loaded), np.asarray(loaded8) * 257.0)
        torch.testing.assert_close(ready.as_tensor(), ready8.as_tensor(), atol=1e-5, rtol=0)
    _infer(inputs, tmp_path / "out", ckpt_dir)
    masks = {
        name: np.asarray(nib.load(tmp_path / "out" / f"{name}_seg.nii.gz").dataobj) for name in ("a8", "a16", "b16")
    }
    np.testing.assert_array_equal(masks["a16"], masks["a8"])
    np.testing.assert_array_equal(masks["b16"], masks["a8"])


def test_constant_images_give_finite_input_and_a_mask(ckpt_dir: Path, tmp_path: Path):
    """All zeros (no foreground at all) and one grey value: the normalisation divides by a floored std, so the network
    sees zeros (not NaN) and a mask is written."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 3), np.float32), np.eye(4)), inputs / "zeros.nii.gz")
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(inputs / "flat.png")
    network = make_workflow(BUNDLE, ["inference.json"], "infer").parser.get_parsed_content("network_def").eval()
    network.load_state_dict(torch.load(ckpt_dir / "model.pt", weights_only=True))
    for name in ("zeros.nii.gz", "flat.png"):
        _, ready = _preprocessed(inputs / name)
        assert torch.equal(ready.as_tensor(), torch.zeros_like(ready.as_tensor()))
        first = ready.as_tensor()[..., 0] if ready.ndim == 4 else ready.as_tensor()
        with torch.no_grad():
            assert torch.isfinite(network(first[None])).all()
    _infer(inputs, tmp_path / "out", ckpt_dir)
    for name, shape in (("zeros", (16, 16, 3)), ("flat", (16, 16))):
        mask = np.asarray(nib.load(tmp_path / "out" / f"{name}_seg.nii.gz").dataobj)
        assert mask.shape == shape and set(np.unique(mask).tolist()) <= {0, 1}


def test_two_inputs_that_would_write_one_mask_stop_naming_both(ckpt_dir: Path, tmp_path: Path):
    """``scan.png`` and ``scan.nii.gz`` in one folder would both write ``scan_seg.nii.gz``: an error naming both
    instead of one mask silently replacing the other."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = (np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8)
    Image.fromarray(image).save(inputs / "scan.png")
    nib.save(nib.Nifti1Image(image.astype(np.float32)[..., None], np.eye(4)), inputs / "scan.nii.gz")
    with pytest.raises(Exception) as error:
        _infer(inputs, tmp_path / "out", ckpt_dir)
    message = _chain(error.value)
    assert "scan.png" in message and "scan.nii.gz" in message and "would both write the mask" in message, message

"""MONAI's bundle tools on every bundle (issue 8): ``verify_net_in_out`` checks ``network_def`` against
metadata.json's ``network_data_format``, and ``ckpt_export`` writes a TorchScript model that computes what the eager
network computes. The tools run in-process for every bundle (the functions the CLI calls); one test runs the CLI
commands themselves, as users type them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, verify_net_in_out
from monai.bundle.scripts import _get_fake_spatial_shape
from monai.data import load_net_with_metadata
from torch.jit.frontend import NotSupportedError

REPO = Path(__file__).resolve().parent.parent
BUNDLES = sorted(p.parent.parent.name for p in (REPO / "bundles").glob("*/configs/inference.json"))

# bundles whose network torch.jit.script cannot compile; torch.jit.trace at the metadata's input shape works instead
TRACE_ONLY = {
    "translation_semi_seg": "torch.nn.utils.parametrizations.spectral_norm uses a comprehension with an `if`, which "
    "torch.jit.script cannot compile (NotSupportedError); see the bundle's docs/README.md, TorchScript",
}
# pattern factors: the CLI defaults (what a plain command uses) and odd ones, so that a pattern is not a one-off
FACTORS = [{"n": 1, "any": 1}, {"n": 3, "any": 37}]


def _files(bundle: str) -> tuple[str, str]:
    configs = REPO / "bundles" / bundle / "configs"
    return str(configs / "inference.json"), str(configs / "metadata.json")


def _parser(bundle: str) -> ConfigParser:
    config, meta = _files(bundle)
    parser = ConfigParser()
    parser.read_config(config)
    parser.read_meta(meta)
    return parser


def _shape(parser: ConfigParser, key: str, batch: int = 1, **factors: int) -> tuple[int, ...]:
    """``(batch, C, *spatial)`` of ``network_data_format``'s ``inputs#image`` or ``outputs#pred``."""
    fmt = parser.get(f"_meta_#network_data_format#{key}")
    return (batch, fmt["num_channels"], *_get_fake_spatial_shape(fmt["spatial_shape"], **factors))


@pytest.mark.parametrize("factors", FACTORS, ids=["defaults", "n3_any37"])
@pytest.mark.parametrize("bundle", BUNDLES)
def test_verify_net_in_out(bundle: str, factors: dict[str, int]):
    config, meta = _files(bundle)
    verify_net_in_out(net_id="network_def", meta_file=meta, config_file=config, device="cpu", **factors)
    # verify_net_in_out checks channels and dtype only: the output must also have the metadata's spatial shape
    parser = _parser(bundle)
    net = parser.get_parsed_content("network_def").eval()
    with torch.no_grad():
        out = net(torch.rand(_shape(parser, "inputs#image", **factors)))
    assert tuple(out.shape) == _shape(parser, "outputs#pred", **factors)


def _export_cases() -> list:
    cases = []
    for bundle in BUNDLES:
        if bundle in TRACE_ONLY:
            marks = pytest.mark.xfail(strict=True, raises=NotSupportedError, reason=TRACE_ONLY[bundle])
            cases.append(pytest.param(bundle, False, id=f"{bundle}-script", marks=marks))
            cases.append(pytest.param(bundle, True, id=f"{bundle}-trace"))
        else:
            cases.append(pytest.param(bundle, False, id=f"{bundle}-script"))
    return cases


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("bundle, use_trace", _export_cases())
def test_ckpt_export(bundle: str, use_trace: bool, tmp_path: Path):
    config, meta = _files(bundle)
    parser = _parser(bundle)
    torch.manual_seed(0)
    ckpt = parser.get_parsed_content("network_def", instantiate=True).state_dict()
    torch.save(ckpt, tmp_path / "model.pt")
    kwargs = {"use_trace": True, "input_shape": list(_shape(parser, "inputs#image"))} if use_trace else {}
    ckpt_export(
        net_id="network_def",
        filepath=str(tmp_path / "model.ts"),
        ckpt_file=str(tmp_path / "model.pt"),
        meta_file=meta,
        config_file=config,
        bundle_root=str(REPO / "bundles" / bundle),
        **kwargs,
    )
    exported, meta_values, extra = load_net_with_metadata(
        str(tmp_path / "model.ts"), more_extra_files=["inference.json"]
    )
    assert meta_values["name"] == bundle and extra["inference.json"]

    torch.manual_seed(1)  # other initial weights: the comparison fails unless the export loaded the checkpoint
    eager = _parser(bundle).get_parsed_content("network_def", instantiate=True)
    eager.load_state_dict(ckpt)
    eager.eval()
    # a traced model is fixed to the metadata's spatial shape; a scripted one must also work at other sizes
    factors = {} if use_trace else FACTORS[1]
    x = torch.rand(_shape(parser, "inputs#image", batch=2, **factors), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(exported(x), eager(x), rtol=1e-4, atol=1e-5)


def test_cli(tmp_path: Path):
    """The commands as users type them: verify af_seg at the metadata defaults, export translation_semi_seg by tracing
    as its README says (the two in parallel: each starts a Python that imports MONAI)."""
    net = _parser("translation_semi_seg").get_parsed_content("network_def", instantiate=True)
    torch.save(net.state_dict(), tmp_path / "model.pt")
    af_config, af_meta = _files("af_seg")
    tr_config, tr_meta = _files("translation_semi_seg")
    bundle = sys.executable, "-m", "monai.bundle"
    verify = [*bundle, "verify_net_in_out", "network_def", "--meta_file", af_meta, "--config_file", af_config]
    export = [*bundle, "ckpt_export", "network_def", "--filepath", str(tmp_path / "model.ts")]
    export += ["--ckpt_file", str(tmp_path / "model.pt"), "--meta_file", tr_meta, "--config_file", tr_config]
    export += ["--bundle_root", str(REPO / "bundles" / "translation_semi_seg"), "--use_trace", "True"]
    export += ["--input_shape", "[1, 1, 48, 48]"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    runs = [
        subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for cmd in (verify, export)
    ]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    for cmd, run, output in zip((verify, export), runs, outputs):
        assert run.returncode == 0, f"{' '.join(cmd)}\n{output[-3000:]}"
    assert "data shape of network is verified with no error" in outputs[0]
    assert torch.jit.load(str(tmp_path / "model.ts"))(torch.rand(1, 1, 48, 48)).shape == (1, 2, 48, 48)

"""Where a bundle of this collection lives (so configs work from the repository root and from the bundle folder),
loading and running its workflows from Python, and launching them under ``torchrun``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def bundle_path(name: str) -> str:
    """Absolute folder of bundle ``name``.

    Tried in order: the current folder when it is that bundle (named ``name`` with a ``configs`` folder, as
    when a user runs from inside the bundle), ``./bundles/<name>`` (the repository root), and the ``bundles/`` folder
    next to this package (an editable install). MONAI Label sets ``bundle_root`` itself and skips this.
    """
    cwd = Path.cwd()
    if cwd.name == name and (cwd / "configs").is_dir():
        return str(cwd)
    for root in (cwd, Path(__file__).resolve().parent.parent):
        candidate = root / "bundles" / name
        if (candidate / "configs").is_dir():
            return str(candidate)
    raise FileNotFoundError(
        f"bundle '{name}' not found from {cwd}; run from the repository root or the bundle folder, "
        "or set bundle_root (e.g. --bundle_root /path/to/bundles/<name>)."
    )


def load_workflow(bundle: str, configs: Sequence[str], workflow_type: str = "train", **overrides: Any):
    """A ``monai.bundle.ConfigWorkflow`` of bundle ``bundle`` (not yet initialised).

    Args:
        bundle: bundle name (folder under ``bundles/``).
        configs: config file names in the bundle's ``configs`` folder, merged in order (e.g. ``["train.json",
            "evaluate.json"]``).
        workflow_type: "train" or "infer" (which properties ``check_properties`` checks).
        overrides: config ids and values, as on the command line (``bundle_root`` defaults to the bundle folder).
    """
    from monai.bundle import ConfigWorkflow

    root = Path(overrides.pop("bundle_root", None) or bundle_path(bundle))
    folder = root / "configs"
    return ConfigWorkflow(
        config_file=[str(folder / c) for c in configs],
        meta_file=str(folder / "metadata.json"),
        logging_file=str(folder / "logging.conf"),
        workflow_type=workflow_type,
        bundle_root=str(root),
        **overrides,
    )


def run_workflow(bundle: str, configs: Sequence[str], workflow_type: str = "train", **overrides: Any):
    """Load, initialise, run and finalise a workflow of bundle ``bundle`` (as ``monai.bundle run`` does).

    Arguments as :func:`load_workflow`. Returns the finalised ``ConfigWorkflow``, whose parser still resolves the
    config's ids (``workflow.parser.get_parsed_content("datalists")``).
    """
    workflow = load_workflow(bundle, configs, workflow_type, **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


@dataclass
class TorchrunResult:
    """What a :func:`torchrun` launch left: the launcher's exit code, each rank's log and exit code.

    Attributes:
        returncode: the launcher's exit code (``None`` when it was stopped at the time limit).
        launcher_log: torchrun's own stdout + stderr (its failure summary names each failed rank).
        rank_logs: stdout + stderr of each local rank, as torchrun redirected them to files.
        rank_exitcodes: exit code of each failed rank from torchrun's summary (negative: killed by that signal).
        timed_out: the launch ran past its time limit and its whole process group was killed.
        seconds: wall time of the launch.
    """

    returncode: int | None
    launcher_log: str
    rank_logs: dict[int, str]
    rank_exitcodes: dict[int, int]
    timed_out: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def report(self, tail_lines: int = 40) -> str:
        """A readable account of a launch: which rank failed (or that it timed out) and the end of its log,
        where ``PYTHONFAULTHANDLER`` has put the Python stack of every thread at a fatal signal."""
        if self.ok:
            return f"torchrun ok in {self.seconds:.0f} s"
        head = (
            f"torchrun timed out after {self.seconds:.0f} s" if self.timed_out else f"torchrun exit {self.returncode}"
        )
        failed = sorted(self.rank_exitcodes) or sorted(self.rank_logs)
        parts = [head + "; failed ranks: " + ", ".join(f"{r} (exit {self.rank_exitcodes.get(r, '?')})" for r in failed)]
        for rank in failed:
            lines = self.rank_logs.get(rank, "").splitlines()[-tail_lines:]
            parts.append(f"--- rank {rank}, last {len(lines)} lines ---\n" + "\n".join(lines))
        parts.append("--- launcher, last lines ---\n" + "\n".join(self.launcher_log.splitlines()[-tail_lines:]))
        return "\n".join(parts)


def torchrun_launch(
    argv: Sequence[str],
    nproc: int = 2,
    port: int = 29500,
    timeout: float = 600.0,
    log_dir: str | Path | None = None,
    threads_per_rank: int = 1,
    cwd: str | Path | None = None,
) -> TorchrunResult:
    """``torchrun --nproc_per_node=nproc <argv>`` on this machine (rendezvous on 127.0.0.1), bounded in time, with one
    log per rank.

    Each rank's stdout and stderr go to their own file under ``log_dir`` (torchrun's ``--redirects 3``), and
    ``PYTHONFAULTHANDLER=1`` makes a rank that dies of a signal (SIGABRT, SIGSEGV) print the Python stack of every
    thread there. The launcher runs in its own process session: past ``timeout`` seconds the whole session (launcher
    and ranks) is killed, so no rank outlives the call.

    Args:
        argv: what torchrun runs: a script and its arguments, or ``["-m", module, ...]``.
        nproc: processes (ranks) on this node.
        port: rendezvous port on 127.0.0.1.
        timeout: seconds before the launch is killed.
        log_dir: folder for the rank logs, kept (default: a temporary folder, removed after reading); only the logs
            of this launch are read.
        threads_per_rank: ``OMP_NUM_THREADS`` of each rank.
        cwd: working folder of the launch (default: the repository root).
    """
    with tempfile.TemporaryDirectory(prefix="torchrun-") as scratch:
        logs = Path(log_dir) if log_dir is not None else Path(scratch)
        logs.mkdir(parents=True, exist_ok=True)
        earlier = set(logs.iterdir())  # torchrun writes each launch's logs into a new job folder
        args = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
        args += ["--master_addr=127.0.0.1", f"--master_port={port}", "--redirects=3", f"--log_dir={logs}", *argv]
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads_per_rank),
            "PYTHONWARNINGS": "ignore",
            "PYTHONFAULTHANDLER": "1",
        }
        start = time.monotonic()
        process = subprocess.Popen(
            args,
            cwd=cwd or Path(__file__).resolve().parent.parent,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,
        )
        timed_out = False
        try:
            launcher_log, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)
            launcher_log, _ = process.communicate()
        seconds = time.monotonic() - start
        rank_logs: dict[int, str] = {}
        for path in sorted(p for job in set(logs.iterdir()) - earlier for p in job.rglob("*.log")):
            if path.parent.name.isdigit() and path.name in ("stdout.log", "stderr.log"):
                text = path.read_text(encoding="utf-8", errors="replace")
                rank_logs[int(path.parent.name)] = rank_logs.get(int(path.parent.name), "") + text
    exitcodes = {
        int(rank): int(code)
        for rank, code in re.findall(r"rank\s*:\s*(\d+)\s*\(local_rank[^)]*\)\s*exitcode\s*:\s*(-?\d+)", launcher_log)
    }
    return TorchrunResult(
        returncode=None if timed_out else process.returncode,
        launcher_log=launcher_log,
        rank_logs=rank_logs,
        rank_exitcodes=exitcodes,
        timed_out=timed_out,
        seconds=seconds,
    )


def torchrun(
    bundle: str,
    configs: Sequence[str],
    overrides: Mapping[str, Any],
    nproc: int = 2,
    port: int = 29500,
    timeout: float = 600.0,
    log_dir: str | Path | None = None,
    threads_per_rank: int = 1,
) -> TorchrunResult:
    """``torchrun --nproc_per_node=nproc -m monai.bundle run`` of a bundle's ``configs`` (e.g. ``["train.json",
    "multi_gpu_train.json"]``) with ``overrides`` (config ids and values, passed as ``--id value``, JSON unless a
    string); the other arguments as :func:`torchrun_launch`."""
    folder = Path(bundle_path(bundle)) / "configs"
    argv = ["-m", "monai.bundle", "run", "--config_file", json.dumps([str(folder / c) for c in configs])]
    for key, value in overrides.items():
        argv += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return torchrun_launch(
        argv, nproc, port, timeout, log_dir, threads_per_rank, cwd=Path(bundle_path(bundle)).parent.parent
    )

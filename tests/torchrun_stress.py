"""Stress loop for the two-process ``torchrun`` runs: each bundle's case of ``torchrun_cases.py`` launched again and
again, optionally under CPU load, counting the failed launches and saying which rank failed and where.

    python tests/torchrun_stress.py --bundles af_seg --runs 50 --load 2 --one-core
    python tests/torchrun_stress.py --runs 10 --load 2 --one-core      # every bundle
    python tests/torchrun_stress.py --bundles teardown-old teardown-new --runs 40 --load 3

``--load K`` starts K busy-looping processes for the whole loop; ``--one-core`` pins the loop (the launcher, both
ranks and the load) to one CPU, so that the ranks' threads are preempted often: that is how the teardown race of
issue 14 (a gloo worker thread releasing the last collective's tensors during interpreter shutdown, SIGABRT with
"terminate called without an active exception") shows in a few runs instead of one full suite in three. Each
failure's report (rank, exit code, the end of that rank's log with the Python stack of every thread at the signal)
is printed and kept under ``--out``; the summary line gives the failure count per bundle. The cases
``teardown-old`` and ``teardown-new`` run ``gloo_teardown.py``, two ranks that end as the bundles ended before the
fix and as they end now, right after an ``all_gather``: the race in a few seconds a launch. ``--switch-interval S``
sets ``sys.setswitchinterval(S)`` in every rank (through a ``sitecustomize`` on ``PYTHONPATH``): a thread that
wants the GIL then waits up to S seconds while the main thread runs Python, which widens the window of that race
without changing it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from torchrun_cases import OVERRIDES, run_case  # noqa: E402

from common.bundle import TorchrunResult, torchrun_launch  # noqa: E402

TEARDOWN = {"teardown-old": "old", "teardown-new": "new"}


def run_teardown(case: str, tmp: Path, port: int, timeout: float) -> tuple[TorchrunResult, list]:
    """One launch of ``gloo_teardown.py`` (two ranks, gloo); nothing to check but the exit codes."""
    script = Path(__file__).resolve().parent / "gloo_teardown.py"
    return torchrun_launch([str(script), TEARDOWN[case]], port=port, timeout=timeout, log_dir=tmp / "logs"), []


def _busy() -> None:
    while True:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", nargs="+", default=list(OVERRIDES), choices=[*OVERRIDES, *TEARDOWN])
    parser.add_argument("--runs", type=int, default=10, help="launches per bundle")
    parser.add_argument("--load", type=int, default=0, help="busy-looping processes beside the launches")
    parser.add_argument("--one-core", action="store_true", help="pin the launches and the load to one CPU")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per launch before it is killed")
    parser.add_argument("--switch-interval", type=float, default=None, help="sys.setswitchinterval in every rank")
    parser.add_argument("--out", default=None, help="folder for the failed launches' reports (default: temporary)")
    args = parser.parse_args(argv)

    if args.one_core:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # inherited by the load and every launch
    load = [multiprocessing.Process(target=_busy, daemon=True) for _ in range(args.load)]
    for process in load:
        process.start()
    if args.switch_interval is not None:
        site = Path(tempfile.mkdtemp(prefix="torchrun-stress-site-"))
        (site / "sitecustomize.py").write_text(f"import sys\nsys.setswitchinterval({args.switch_interval})\n")
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="torchrun-stress-"))
    out.mkdir(parents=True, exist_ok=True)
    failures: dict[str, int] = {}
    try:
        for bundle in args.bundles:
            failures[bundle] = 0
            for run in range(args.runs):
                tmp = Path(tempfile.mkdtemp(prefix=f"{bundle}-{run}-"))
                start = time.monotonic()
                # a fresh port for every launch: a port in TIME_WAIT would fail the rendezvous, not the run
                launch = run_teardown if bundle in TEARDOWN else run_case
                result, missing = launch(bundle, tmp, port=29600 + (run % 100), timeout=args.timeout)
                ok = result.ok and not missing
                print(
                    f"{bundle} run {run + 1}/{args.runs}: {'ok' if ok else 'FAILED'} "
                    f"({time.monotonic() - start:.0f} s)",
                    flush=True,
                )
                if not ok:
                    failures[bundle] += 1
                    report = result.report() + (f"\nmissing files: {missing}" if missing else "")
                    (out / f"{bundle}-{run}.txt").write_text(report, encoding="utf-8")
                    print(report, flush=True)
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        for process in load:
            process.terminate()
    summary = ", ".join(f"{b}: {n} failed of {args.runs}" for b, n in failures.items())
    setting = f"load {args.load}, one core {args.one_core}, switch interval {args.switch_interval}"
    print(f"summary ({setting}): {summary}; reports in {out}", flush=True)
    return 1 if any(failures.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

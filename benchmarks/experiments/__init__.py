"""Drivers of one-off experiments, each run as ``python benchmarks/experiments/<name>.py`` from the repository root;
README.md lists what each measured, when, and where its results are."""

"""The benchmark scripts: speed and cost measurements and the demo run (``python benchmarks/<name>.py``), and under
``experiments/`` the drivers of one-off experiments whose results are in docs/results/.

A package so that the tests and the scripts themselves import a script as ``from benchmarks import run_phases`` or
``from benchmarks.experiments import adversarial_selection``, from the repository root (pytest puts it on
``sys.path``, see ``[tool.pytest.ini_options]`` in pyproject.toml; a script run as ``python benchmarks/...`` puts it
there itself). Not part of the installed ``common`` package.
"""

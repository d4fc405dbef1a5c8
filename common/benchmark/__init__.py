"""The label-efficiency benchmark as a package: tasks (MSD folders), arms, protocol v2, runner, statistics, report.

``python benchmarks/label_efficiency.py`` is its command line; ``docs/label_efficiency.md`` its generated report.
"""

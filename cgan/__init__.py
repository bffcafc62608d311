"""CGAN batch generation: the domain library (no Airflow import anywhere in it).

Everything the recipe does by hand lives here: the upstream generator, safe checkpoint
loading, ONNX export, seeded input bins, runtimes, grids, perf records and quality reports.
"""

__version__ = "0.1.0"

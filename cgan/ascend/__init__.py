"""The Ascend toolchain: atc (ONNX -> om) and msame (om + bins -> output bins) wrappers.

Built from the tools' documented contracts (see docs/ascend.md): no shell, every value
validated before a tool runs, output found by discovery, failure detected even when a tool
exits 0. Nothing here imports Airflow.
"""

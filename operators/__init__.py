"""Airflow operators of the CGAN job: thin wrappers that call the `cgan` library."""

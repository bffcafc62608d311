"""CleanupWorkspaceOperator: a published run's workspace removed; expired ones of earlier runs too.

Runs after publish, only when publish succeeded (the default trigger rule): the run's workspace
(`runs/<run key>/` under the artifact root: bins, handed-over outputs, grids, perf, quality) is
deleted, then every other workspace untouched for more than `retention_days`
(CGAN_WORKSPACE_RETENTION_DAYS, default 7): what failed runs left for inspection. The model store
and the atc cache (`models/`, `atc-cache/`: one entry per content) are never touched. In the
publish bucket, only run prefixes with no manifest (runs that failed after their inference tasks
staged packs, cgan.run.staging) whose newest object is older than the same retention are removed
(cgan.publishing.publish.remove_unpublished_runs), and, only when CGAN_PUBLISHED_RETENTION_DAYS is
set, published runs older than it except the one latest.json names (remove_expired_runs). An
artifact root whose `runs/` would be the published runs is refused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from operators.base import CganBaseOperator


class CleanupWorkspaceOperator(CganBaseOperator):
    """Remove the run's workspace (after its publish succeeded) and expired workspaces.

    :param workspace: the run's workspace URI; must lie under `artifact_root`'s runs/
    :param publish_bucket: the publish bucket (CGAN_PUBLISH_BUCKET), checked not to be the artifact root
    :param artifact_root: store holding every run's workspace; default CGAN_ARTIFACT_ROOT
    :param retention_days: days a left-behind workspace (and an unpublished run's staged grids in the
        publish bucket) is kept; default CGAN_WORKSPACE_RETENTION_DAYS
    :param sweep_publish_bucket: also remove expired unpublished run prefixes from the publish bucket
        (False: a deployment with no publish bucket reachable from this task)
    :param aws_conn_id: Airflow connection for an s3:// artifact root and the publish bucket
    """

    template_fields: Sequence[str] = (*CganBaseOperator.template_fields, "publish_bucket", "artifact_root",
                                      "retention_days")
    ui_color = "#f1f3f4"

    def __init__(self, *, publish_bucket: str, artifact_root: str | None = None,
                 retention_days: float | None = None, sweep_publish_bucket: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.publish_bucket = publish_bucket
        self.artifact_root = artifact_root
        self.retention_days = retention_days
        self.sweep_publish_bucket = sweep_publish_bucket

    def execute(self, context) -> dict:
        from cgan import settings
        from cgan.layout.workspace import check_not_published_area, expired_workspaces, remove_workspace, workspace_uri
        from cgan.storage.keys import StoreError

        root_uri = (self.artifact_root or settings.artifact_root()).rstrip("/")
        from cgan.publishing.publish import check_retention

        days = check_retention(float(settings.workspace_retention_days() if self.retention_days in (None, "")
                                     else self.retention_days), "retention_days (CGAN_WORKSPACE_RETENTION_DAYS)")
        check_not_published_area(root_uri, self.publish_bucket)
        run_key = self.workspace.rstrip("/").rsplit("/", 1)[-1]
        if workspace_uri(root_uri, run_key) != self.workspace.rstrip("/"):
            raise StoreError(f"workspace {self.workspace} is not a run workspace under {root_uri}: nothing removed")
        root = self.open_store(root_uri)
        objects, size = remove_workspace(root, run_key)
        self.log.info("Removed the published run's workspace %s: %d objects, %d bytes", self.workspace, objects, size)
        expired = expired_workspaces(root, now=time.time(), retention_days=days, keep=run_key)
        for name, age in expired.items():
            n, b = remove_workspace(root, name)
            self.log.info("Removed workspace runs/%s, untouched for %.1f days (> %g): %d objects, %d bytes",
                          name, age, days, n, b)
        unpublished, expired_runs = self._sweep_publish_bucket(run_key, days) if self.sweep_publish_bucket else ({}, {})
        left_objects, left_bytes = root.usage()
        self.log.info("Artifact store %s now holds %d objects, %d bytes (models, atc cache, workspaces of "
                      "unpublished runs younger than %g days)", root_uri, left_objects, left_bytes, days)
        return {"removed_objects": objects, "removed_bytes": size, "expired_removed": sorted(expired),
                "unpublished_removed": sorted(unpublished), "published_removed": sorted(expired_runs),
                "left_objects": left_objects, "left_bytes": left_bytes}

    def _sweep_publish_bucket(self, run_key: str, days: float) -> tuple[dict[str, float], dict[str, float]]:
        """Unpublished runs' staged packs older than the retention, out of the publish bucket; and
        published runs older than CGAN_PUBLISHED_RETENTION_DAYS, when it is set."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from cgan import settings
        from cgan.layout.published import RUNS_PREFIX
        from cgan.publishing.publish import remove_expired_runs, remove_unpublished_runs
        from cgan.storage import s3

        client = S3Hook(aws_conn_id=self.aws_conn_id).get_conn()
        keep = f"{RUNS_PREFIX}{run_key}"
        now = s3.server_time(client, self.publish_bucket)  # ages on the clock of the LastModified times
        unpublished = remove_unpublished_runs(client, self.publish_bucket, now=now, retention_days=days,
                                              keep=keep, log=self.log.info)
        published_days = settings.published_retention_days()
        if published_days is None:
            return unpublished, {}
        return unpublished, remove_expired_runs(client, self.publish_bucket, now=now,
                                                retention_days=published_days, keep=keep, log=self.log.info)

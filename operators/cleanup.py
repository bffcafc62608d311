"""CleanupWorkspaceOperator: a published run's workspace removed; expired ones of earlier runs too.

Runs after publish, only when publish succeeded (the default trigger rule): the run's workspace
(`runs/<run key>/` under the artifact root: bins, handed-over outputs, grids, perf, quality) is
deleted, then every other workspace untouched for more than `retention_days`
(CGAN_WORKSPACE_RETENTION_DAYS, default 7): what failed runs left for inspection. The model store
and the atc cache (`models/`, `atc-cache/`: one entry per content) and the publish bucket are
never touched. An artifact root whose `runs/` would be the published runs is refused.
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
    :param retention_days: days a left-behind workspace is kept; default CGAN_WORKSPACE_RETENTION_DAYS
    :param aws_conn_id: Airflow connection for an s3:// artifact root
    """

    template_fields: Sequence[str] = (*CganBaseOperator.template_fields, "publish_bucket", "artifact_root",
                                      "retention_days")
    ui_color = "#f1f3f4"

    def __init__(self, *, publish_bucket: str, artifact_root: str | None = None,
                 retention_days: float | None = None, **kwargs):
        super().__init__(**kwargs)
        self.publish_bucket = publish_bucket
        self.artifact_root = artifact_root
        self.retention_days = retention_days

    def execute(self, context) -> dict:
        from cgan import config
        from cgan.store import StoreError
        from cgan.workspace import check_not_published_area, expired_workspaces, remove_workspace, workspace_uri

        root_uri = (self.artifact_root or config.artifact_root()).rstrip("/")
        days = float(config.workspace_retention_days() if self.retention_days in (None, "") else self.retention_days)
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
        left_objects, left_bytes = root.usage()
        self.log.info("Artifact store %s now holds %d objects, %d bytes (models, atc cache, workspaces of "
                      "unpublished runs younger than %g days)", root_uri, left_objects, left_bytes, days)
        return {"removed_objects": objects, "removed_bytes": size, "expired_removed": sorted(expired),
                "left_objects": left_objects, "left_bytes": left_bytes}

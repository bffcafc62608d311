"""PublishRunOperator: grids, perf and quality of a run to object storage, manifest last.

Emits an event on each of its outlets (the DAG's published-run Asset) whose extra names the run:
run_id, bucket, manifest, grids, label_accuracy, grids_per_s and gate (accepted or rejected).

Uploads through the amazon provider's S3Hook (connection `cgan_s3` by default); the task
gets a "Published run" link to the manifest. Every publish error names the connection id, the
bucket and the endpoint, never a credential; wrong credentials or a missing bucket fail at once
(no retries), a store that is down keeps the task's retries.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

from operators.base import CganBaseOperator

URL_XCOM_KEY = "published_url"


class PublishedRunLink(BaseOperatorLink):
    name = "Published run"

    def get_link(self, operator, *, ti_key) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(ti_key=ti_key, key=URL_XCOM_KEY) or ""


class PublishRunOperator(CganBaseOperator):
    """Publish the workspace's grids/, perf/ and quality/ under s3://bucket/run_prefix/.

    :param workspace: the run's workspace URI (see CganBaseOperator)
    :param bucket: the publish bucket (CGAN_PUBLISH_BUCKET)
    :param run_prefix: the run's prefix in that bucket, `runs/<run key>`
    :param params_used: the run's checked params, recorded in the manifest
    :param shards: the plan's shards (XCom form): what is published must be exactly their grids and reports
    :param logical_date: the run's logical date (ISO); decides whether latest.json moves
    :param export_task_id: task whose XCom describes the exported model (manifest `model`)
    :param convert_task_id: task whose XCom describes the om (None or skipped: no om)
    :param postprocess_task_id: task whose XCom is the run's summary
    :param aws_conn_id: Airflow connection of the publish store (and an s3:// workspace)
    """

    template_fields: Sequence[str] = (*CganBaseOperator.template_fields, "bucket", "run_prefix", "params_used",
                                      "logical_date", "shards")
    operator_extra_links = (PublishedRunLink(),)
    ui_color = "#fce8e6"

    def __init__(self, *, bucket: str, run_prefix: str, params_used: dict, shards: list[dict] | None = None,
                 logical_date: str | None = None, export_task_id: str = "export_onnx",
                 convert_task_id: str | None = "atc_convert", postprocess_task_id: str = "postprocess",
                 **kwargs):
        super().__init__(**kwargs)
        self.bucket = bucket
        self.run_prefix = run_prefix
        self.params_used = params_used
        self.shards = shards
        self.logical_date = logical_date
        self.export_task_id = export_task_id
        self.convert_task_id = convert_task_id
        self.postprocess_task_id = postprocess_task_id

    def _planned(self) -> dict[int, tuple[int, int]] | None:
        """{shard index: (first grid, grids)} of the plan; None when no plan was given."""
        if self.shards is None:
            return None
        from cgan.run.shard import Shard

        return {s.index: (s.start, s.count) for s in map(Shard.from_xcom, self.shards)}

    def execute(self, context) -> dict:
        from cgan.publishing.publish import PublishError

        try:
            return self._publish(context)
        except PublishError as exc:  # same class (retryable or not), with where it went
            raise type(exc)(f"{exc} [connection {self.aws_conn_id!r}, bucket {self.bucket!r}]") from exc

    def _publish(self, context) -> dict:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from cgan.publishing.publish import build_metadata, publish_run
        from cgan.recipe.perf import peak_rss_mb
        from cgan.settings import published_url_template

        ti = context["ti"]
        pull = lambda task_id: ti.xcom_pull(task_ids=task_id) if task_id else None  # noqa: E731
        post = pull(self.postprocess_task_id)
        if isinstance(post, dict):  # the run's summary, without the postprocess task process's memory
            post = {k: v for k, v in post.items() if k != "peak_rss_mb"}
        metadata = build_metadata(
            run_id=ti.run_id, logical_date=self.logical_date, params=self.params_used,
            export=pull(self.export_task_id), convert=pull(self.convert_task_id), postprocess=post,
        )
        hook = S3Hook(aws_conn_id=self.aws_conn_id)
        client = hook.get_conn()
        store = self.store
        self.log.info("Publishing %s to s3://%s/%s/ (connection %s)", store.uri, self.bucket,
                      self.run_prefix, self.aws_conn_id)
        with tempfile.TemporaryDirectory(prefix="cgan-publish-") as tmp:
            published = publish_run(store, client, self.bucket, self.run_prefix, planned=self._planned(),
                                    metadata=metadata, log=self.log.info, tmp_dir=tmp)
        endpoint = (client.meta.endpoint_url or "").rstrip("/")
        url = published_url_template().format(endpoint=endpoint, bucket=self.bucket, prefix=self.run_prefix,
                                              name=self.run_prefix.rsplit("/", 1)[-1], dag_id=quote(ti.dag_id, safe=""),
                                              run_id=quote(ti.run_id, safe=""))
        ti.xcom_push(key=URL_XCOM_KEY, value=url)
        summary = metadata.get("summary") or {}
        extra = {"run_id": ti.run_id, "bucket": self.bucket, "manifest": published.manifest_key,
                 "grids": summary.get("grids"), "label_accuracy": summary.get("label_accuracy"),
                 "grids_per_s": summary.get("grids_per_s"), "gate": published.status}
        for outlet in self.outlets:  # the published-run Asset: other DAGs schedule on it (its extra says which run)
            context["outlet_events"][outlet].extra = extra
        reports = published.objects - 2 * published.packs
        self.log.info("Published %s: %s grid(s) in %d pack(s) (each with its index) and %d report object(s), "
                      "%d objects and %d bytes in all besides the manifest s3://%s/%s; quality gate: %s",
                      published.uri, summary.get("grids"), published.packs, reports, published.objects,
                      published.bytes, self.bucket, published.manifest_key, published.status)
        self.log.info("The run in the gallery: %s", url)  # the last line: where a person looks next
        return {"uri": published.uri, "manifest": published.manifest_key, "objects": published.objects,
                "status": published.status, "peak_rss_mb": peak_rss_mb()}  # this process's VmHWM, for make bench

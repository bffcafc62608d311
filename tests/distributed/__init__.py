"""A distributed run on one machine: the production topology (Postgres, Redis, CeleryExecutor,
api-server, scheduler, dag-processor, one Celery worker per queue, S3) without containers."""

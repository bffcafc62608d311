"""One run, in task order: the plan and its shards, a shard's inputs, rendering and staging, postprocess."""

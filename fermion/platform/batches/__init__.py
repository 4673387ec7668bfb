"""Batch predictions: every row (or image) of a dataset version through one endpoint of a deployment.

A job runs on the control plane's event loop and calls the deployment's replicas the way the gateway does
(`fermion.platform.gateway.inside`): the replicas' dynamic batching, the gateway's least-busy routing and
metrics, and the autoscaler all see its load. Its concurrency is bounded, and shrinks to one row per replica
while interactive calls reach the same deployment (`Throttle`). Answers, errors included, are appended to a
results file row by row; a restarted control plane resumes from it (`rows`), and the finished job stores the
inputs with their outputs as a new dataset version.
"""

from fermion.platform.batches.job import BatchJob, BatchLimits, new_job_id
from fermion.platform.batches.runner import BatchJobs

__all__ = ["BatchJob", "BatchJobs", "BatchLimits", "new_job_id"]

"""Training jobs of the platform: `fermion train` runs in a child process, one at a time, watched here.

The child prints its progress as JSON lines (`--progress-json`); each line updates the job, and the
job is saved to `<data dir>/trainings/<id>.json` so that the console can follow it and a restart
keeps its history. A job still running when the control plane stops is cancelled and says so;
one whose control plane was killed is found by the pid and start time its file records, and
stopped by the next control plane, so no training process runs on unwatched.

The queue is bounded (`TrainingLimits`: jobs queued or running per token and in all, the longest
budget); beyond it a new job is refused with 429 and when to try again. Jobs take turns by token:
the next to run is the oldest job of the token whose last turn is longest ago, so one token that
queued many jobs cannot keep another's waiting behind all of them.
"""

from fermion.platform.trainings.job import TrainingJob, TrainingLimits, new_job_id
from fermion.platform.trainings.queue import TrainingJobs, next_in_turn

__all__ = ["TrainingJob", "TrainingJobs", "TrainingLimits", "new_job_id", "next_in_turn"]

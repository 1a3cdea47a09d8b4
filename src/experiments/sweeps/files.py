"""What a sweep and its jobs leave in the sweep's folder, so that a job and the sweep's summary share what they
know through files, not through a process's memory (jobs may run in other processes, or on other nodes)."""

SWEEP_CONFIG = "sweep.yaml"  # in the sweep's folder: what its summary needs of the sweep's config
CHECKED_JOBS = (
    "checked_jobs.json"  # in the sweep's folder: the jobs the pre-check passed, which skip their own
)
JOB_ERROR = "job_error.txt"  # in a failed job's output folder: its overrides and one-line error

"""Jobs, a client of the node: job files, schedules, the scheduler, retries,
the job lock, run history, diffs between runs and exports."""

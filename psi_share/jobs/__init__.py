"""Jobs, a client of the node: job files, schedules, the scheduler, retries,
the job lock, run history, diffs between runs and exports."""

#: Formats of ``results export`` (here, so the CLI can offer them without
#: importing the exporters and the STIX library on every start).
EXPORT_FORMATS = ("csv", "json", "stix")

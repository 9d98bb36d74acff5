"""Jobs the relay started, followed to their end: by clients' retrieves and by the relay itself.

- `settle`: the one place a job's new status is stored; a final one settles its charge, counts
  it and writes its webhook events, exactly once whoever saw it first.
- `pacing`: when a job is polled next (the upstream's hint, else an interval that grows with the
  job's age) and each account's share of the watcher's polls.
- `watcher`: the background loop that polls unfinished jobs nobody else is polling, under a
  lease in the database so one worker of one replica polls each job at a time.
"""

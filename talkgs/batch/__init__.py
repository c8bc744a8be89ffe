"""``talkgs batch``: many prepare / train / render jobs across the GPUs of a host or a Ray cluster.

- :mod:`talkgs.batch.plan`: the jobs file read into jobs, each parsed by the command line's own
  parser, their dependencies, the refusals of a bad file and what is already done (torch-free).
- :mod:`talkgs.batch.scheduler`: the one scheduler both executors share (readiness, skipping,
  progress lines, the summary table, Ctrl-C).
- :mod:`talkgs.batch.worker`: what runs a job on one device (a long-lived worker holding the
  heads it rendered), and the two executors: local worker processes, or Ray actors.
"""

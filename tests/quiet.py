"""Training options for tests: no loader processes (two cores) and no progress lines."""

from vssbench.benchmark.training import TrainingOptions

QUIET = TrainingOptions(num_workers=0, progress=False)

"""Time-to-accuracy training harness in the manner of MLPerf Training.

``tailmark train WORKLOAD`` times a reference model from a fresh seed to a fixed quality target, N times, and
scores the set as MLPerf does (drop the fastest and slowest run, mean of the rest). The pieces:

- ``workload``: what a workload is (data, model, target, eval cadence, hyperparameters with the tunable subset).
- ``workloads/<name>/``: the workloads (smoke, vision, recommendation, translation, translation-smoke, lm), each with
  a README.
- ``context``: one process's place in a run (seed, rank, world size) and the data-parallel helpers.
- ``mlperf_log``: ``:::MLLOG`` lines through ``mlperf_logging.mllog``, on rank 0 only.
- ``classification``: the training loop the two image workloads share; ``scheduled_steps``: the optimiser step
  (warm-up + cosine, clipped) the three Transformer workloads share.
- ``harness``: MLPerf's timing rules for one run; ``worker``: the process that executes one run.
- ``runner``: N runs in MLPerf's result layout; ``results``: the result JSON; ``report``: console lines.
- ``logparse``, ``scoring``, ``rcp``: what a set of logs says (time to train, olympic score, convergence check).
- ``checker`` and ``compliance/``: the stock ``mlperf_logging.compliance_checker`` with a configuration per workload.
- ``rcps/``: reference convergence points produced by this project; ``rcp_recorded``: points from sets already run.
"""

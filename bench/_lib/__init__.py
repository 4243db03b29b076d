"""What the benchmark scripts share: one copy of the harness, none of the measurements.

``procs`` starts and stops the processes under test (broker, daemons, py-spy) through the
CLI; ``children`` runs client processes that meet the parent at a barrier; ``procsample``
reads their CPU and memory from ``/proc``; ``machine`` says how busy and how fast the
shared machine is; ``uds`` is a minimal HTTP/1.1 client over a daemon's Unix socket and
``sse`` a reader of its event stream; ``stats`` holds the percentiles and their format.

The scripts are run as files (``.venv/bin/python bench/e2e.py``), which puts ``bench/`` first
on ``sys.path``; each also inserts its own directory there, so ``_lib`` imports whichever way
a script is started. Nothing here imports ``claudemesh``: the processes under test are
reached through the console script, so a script can measure another checkout's source.
"""

"""Jobs: rows in the store that a worker claims and runs (training, for now).

`store` holds the state machine (queued -> running -> succeeded | failed | cancelled) and the
events and metric series; `sink` lets a running step report into it; `runner` runs one job
in this process; `worker` claims jobs and runs each in a child process; `train` is the
training pipeline (build -> train -> evaluate -> gate -> register).
"""

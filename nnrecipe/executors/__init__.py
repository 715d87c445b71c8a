"""Where experiments run beyond the stage's own process: tune's worker processes on one study
(`python -m nnrecipe.executors.tune_worker`)."""

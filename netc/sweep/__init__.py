"""`netc sweep`: searches over a spec's hyperparameters and architecture, trials run on Dask distributed
and chosen by Optuna. One concern per module:

    model      the sweep file's pydantic models (the single source of the format and its JSON Schema)
    paths      spec paths (`layers[fc1].out`): parse, resolve against a spec's data, set values
    space      the space as Optuna distributions and grids, probes for validation, a trial's spec
    load       a sweep file to a checked LoadedSweep, every error located (no Dask, no Optuna)
    folder     the sweep folder: trials.jsonl, trial run folders, best/, the leaderboard
    pictures   the metric against each parameter, and parallel coordinates (matplotlib)
    worker     what runs on a Dask worker: one trial, single-threaded, its files written or shipped back
    cluster    the embedded LocalCluster (loopback only) or a running scheduler by address (TLS)
    study      the Optuna study: samplers, pruner, SQLite storage in the folder, resume bookkeeping
    runner     the client loop: asks, submits, prunes, records, retries, stops

Dask, distributed and Optuna are an optional extra (`pip install -e ".[sweep]"`), imported only by
worker, cluster, study and runner; the rest (and `netc validate` of a sweep file) works without them.
"""

INSTALL_HINT = 'pip install -e ".[sweep]"   (or: pip install "dask[distributed]>=2024.10,<2027" "optuna>=3.5,<6")'

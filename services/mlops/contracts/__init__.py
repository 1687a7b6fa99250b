"""What two stages hand each other, defined once: nothing else lives here.

* :mod:`~mlops.contracts.columns`: names of the feature and target columns of a dataset;
* :mod:`~mlops.contracts.keys`: where things live in the object store (datasets,
  quarantine, raw responses, predictions, reports);
* :mod:`~mlops.contracts.datasets`: the dataset manifest and its reader (``latest_version``,
  ``load``); the writer is data prep's;
* :mod:`~mlops.contracts.models`: the model interface (``ModelRef``, lineage tags, the
  ``Predictor`` protocol, loading a registered version, ``predict_close``);
* :mod:`~mlops.contracts.catalog`: the named model configurations (``MODEL_CONFIGS_DIR``);
* :mod:`~mlops.contracts.predictions`: the predictions batch inference hands to trading and
  monitoring, and how they are joined with what came true.

Stages import these and the shared edges (settings, store, db, tracking, runs, log,
errors, context, metrics), never each other. Nothing here imports a heavy library at
module level (TA-Lib, torch, Ludwig, MLflow, evidently).
"""

"""Step 5, training: tune candidates by CV on the training split, evaluate the winner once.

Honesty rules this package keeps:

- Tuning sees the training split only, and the imputer never sees a CV fold's validation rows.
  On a split of at most ``training.search_max_rows`` rows each candidate is tuned as
  ``Pipeline([("preprocess", <unfitted preprocessor>), ("model", estimator)])``, so the imputer
  is fitted inside every CV fold on the fold's training rows. On a larger split the search runs
  on a bounded sample of it (below) and the imputer is fitted on training rows **outside** that
  sample: no row it learnt from is ever a CV row, so the folds are as honest as before, and the
  sample is imputed once instead of once per fit.
- With ``split.duplicate_aware`` the folds are ``StratifiedGroupKFold`` over a hash of the feature
  values: identical rows never sit on both sides of a fold (they would inflate CV scores).
- The winner is chosen by mean CV score; the test split is read for one evaluation of that winner.

Cost that stops growing where growth buys nothing: the search tunes on a bounded, grouped
(identical rows together) and stratified sample of the split (:mod:`netsec_tasks.sampling`,
``training.search_max_rows``); only the winner is refit on the whole split. Boosted candidates
stop early (histogram gradient boosting on its own 10% hold-out; XGBoost on rows held out from
both the search sample and the refit), and a random forest's refit draws as many rows per tree
as its trees had in the search (:attr:`CandidateSpec.refit_budget`). Progress, with an estimate
of the time left, is logged after every candidate.

The final model is ``Pipeline([("preprocess", <the transform step's fitted preprocessor>),
("model", <winner refit on the transformed training split>)])``. Everything is tracked in MLflow:
a parent run per pipeline run (reused when a task is retried), a nested run per candidate, and the
model logged with skops. Any failure ends the parent run FAILED without a logged model, so nothing
half-trained can be registered.

Six modules: :mod:`.data` (the split in memory, the search sample, the CV folds),
:mod:`.search` (tuning the candidates, the winner's operating point), :mod:`.evaluate` (tune,
refit and the one test evaluation), :mod:`.outcome` (what that produced, and its record),
:mod:`.mlflow_runs` (the MLflow runs) and :mod:`.step` (the step, tracked or not).
"""

from netsec_tasks.train.data import LoadedSplit, SearchData, make_cv, row_groups, search_data, search_masks
from netsec_tasks.train.search import choose_operating_point, selection_metric, tune_candidate, tune_on_worker
from netsec_tasks.train.step import MODEL_FILE, train, train_model

__all__ = [
    "MODEL_FILE",
    "LoadedSplit",
    "SearchData",
    "choose_operating_point",
    "make_cv",
    "row_groups",
    "search_data",
    "search_masks",
    "selection_metric",
    "train",
    "train_model",
    "tune_candidate",
    "tune_on_worker",
]

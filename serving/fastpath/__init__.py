"""The fast path: the promoted Pipeline's own preprocessing, then the estimator through a fast
predictor from its library or a maintained compiler, verified against the Pipeline at load time.

Why: a one-row ``Pipeline.predict_proba`` costs 2-16 ms (300-tree forest ~15 ms, XGBoost ~4 ms,
HistGradientBoosting ~4 ms, AdaBoost ~10 ms), almost all of it per-call overhead (the
ColumnTransformer's pandas bookkeeping, the imputer's checks, per-tree input validation), not
arithmetic.

**Preprocessing** is never re-implemented. The netsec ``preprocess`` step is a ColumnTransformer
of imputers (KNNImputer on numeric columns, SimpleImputer + OneHotEncoder on categorical ones):

- a row without NaN passes a numeric imputer unchanged (the imputer only fills gaps), so its
  numeric block is the identity (minus columns the imputer drops because they were empty in
  training); any other fitted transformer in a block (a scaler...) is called itself;
- a row with NaN, and every row of a model with non-numeric features (a DataFrame input), goes
  through the fitted ``preprocess`` step itself: the real KNNImputer fills its gaps. Imputation of
  a row does not depend on the other rows of the batch, so rows are split by "has NaN".

**Estimators** (the ``netsec_tasks.candidates``). Measured in process on the UCI file, bench
sizes (300 trees...), as "one row; per row in a 1000-row batch"; the machine was shared (+-30%):

- RandomForest, ExtraTrees, DecisionTree, AdaBoost: onnxruntime on the skl2onnx conversion,
  float32. Forest: 13 us; 25-45 us/row (Pipeline 15.7 ms; 47 us/row. The former hand-written
  walker: 190 us; 30-40 us/row with its threaded batch path, so it no longer earned its place
  and is gone). AdaBoost: 240 us; 5 us/row (Pipeline 10.6 ms; 15 us/row).
- XGBClassifier: onnxruntime on the onnxmltools conversion, float32, up to 32 rows (10 us CPU
  for one row: ``Booster.inplace_predict`` costs ~240 us even for one row, treelite GTIL ~56 us),
  ``inplace_predict`` above (exact, 3.4 us/row; Pipeline 4.3 ms; 11 us/row).
- HistGradientBoosting: treelite GTIL up to 128 rows (55 us; GTIL 27 us/row), above them
  scikit-learn's own predictor on one OpenMP thread, split over our threads (exact; 19 us/row.
  Pipeline 4.4 ms; 15 us/row on idle cores but up to 800 us/row when its per-tree OpenMP
  regions compete with other work: see :func:`plan_for`).
- LogisticRegression (with its StandardScaler): onnxruntime, float64: 10 us; 0.1 us/row.
- anything else: the estimator's own ``predict_proba`` (exact; skips the ColumnTransformer).

Large batches of the onnxruntime, XGBoost and HistGradientBoosting predictors are split by rows
across ``batch_threads`` threads (:class:`RowSplitter`; all release the GIL).

**Exactness.** Preprocessing, ``inplace_predict`` and the estimator's own ``predict_proba`` are
*exact*: bit-identical probabilities. onnxruntime and treelite are *within* :data:`ATOL`
(``|p_fast - p_pipeline| <= 1e-5`` on P(threat); measured 1e-6 or less), because they sum leaf
values in float32 in another order (onnxruntime) or apply the sigmoid with another libm call
(treelite on HistGradientBoosting). The decision is always the model's: a row whose fast
P(threat) is within ATOL of the model's threshold is re-scored by the estimator itself (on the
same, exact, preprocessed row), so :func:`netsec_tasks.operating_point.decide` sees the
Pipeline's own probability where it matters. ONNX stores split
thresholds in float32 while scikit-learn compares float32 features with float64 thresholds, so
before conversion each threshold is lowered to the largest float32 not above it
(:func:`.predictors._float32_thresholds`): routing is then identical for every float32 input,
not just for the rows we happen to test.

Nothing is trusted blindly: :func:`verify` runs the fast path and the Pipeline on real rows (the
model's own test split plus copies with cells set to NaN) through both the small-batch and the
large-batch predictor, checks every row's decision against the registered model's own
``predict`` (its threshold), and :func:`fast_path_for` keeps the fast path only when it agrees.

Five modules: :mod:`.base` (ATOL, NotCompilable), :mod:`.preprocess` (the preprocessing),
:mod:`.predictors` (the estimator predictors and :func:`plan_for`), :mod:`.compiled`
(:class:`FastPipeline`, :func:`compile_pipeline`) and :mod:`.verification` (:func:`verify`,
:func:`fast_path_for`).
"""

from serving.fastpath.base import ATOL, NotCompilable
from serving.fastpath.compiled import FastPipeline, RowSplitter, compile_pipeline
from serving.fastpath.predictors import Plan, Predictor, estimator_name, plan_for
from serving.fastpath.verification import Verdict, fast_path_for, verify

__all__ = [
    "ATOL",
    "FastPipeline",
    "NotCompilable",
    "Plan",
    "Predictor",
    "RowSplitter",
    "Verdict",
    "compile_pipeline",
    "estimator_name",
    "fast_path_for",
    "plan_for",
    "verify",
]

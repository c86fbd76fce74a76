"""A compiled, verified fast path for small requests.

Why: a one-row ``Pipeline.predict_proba`` on a 300-tree random forest costs ~15 ms, almost all
of it per-call overhead (input validation in each of the 300 ``tree.predict_proba`` calls, the
ColumnTransformer's pandas bookkeeping, KNNImputer's checks), not arithmetic. Here the fitted
pipeline is flattened into NumPy arrays once, at load time:

- the ``preprocess`` step, when it is a ColumnTransformer made of imputers, scalers and
  passthrough (the numeric path of the netsec pipeline), becomes column gathers and arithmetic;
  the service rejects NaN before inference, so imputers are the identity on valid columns;
- a decision tree, random forest or extra-trees model becomes one node table that all trees walk
  together, level by level, with the same float32 comparison and the same summation order as
  scikit-learn (so the probabilities are bit-identical, not merely close).

Nothing here is trusted blindly: :func:`compile_pipeline` runs both paths on probe rows and keeps
the fast path only when the outputs are identical. Anything it does not recognise (one-hot
encoders, boosting, XGBoost...) keeps the plain scikit-learn call. Large batches also use
scikit-learn, whose per-tree loops beat level-by-level gathers once the overhead is amortised.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]


class NotCompilable(Exception):
    """The pipeline contains a step the fast path does not reproduce."""


# --- preprocessing --------------------------------------------------------------------------

def _compile_step(step: Any) -> Transform:
    """One fitted transformer on a float matrix with no NaN -> a NumPy function."""
    from sklearn.impute import KNNImputer, SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    if step == "passthrough" or step is None:
        return lambda x: x
    if isinstance(step, Pipeline):
        parts = [_compile_step(s) for _, s in step.steps]

        def chain(x: np.ndarray) -> np.ndarray:
            for part in parts:
                x = part(x)
            return x
        return chain
    if isinstance(step, KNNImputer):
        # Without missing values KNNImputer only drops the columns that were empty in training.
        if getattr(step, "keep_empty_features", False):
            return lambda x: x
        return _column_subset(np.flatnonzero(step._valid_mask), step._valid_mask.size)
    if isinstance(step, SimpleImputer):
        if step.add_indicator or getattr(step, "keep_empty_features", False):
            if step.add_indicator:
                raise NotCompilable("SimpleImputer(add_indicator=True)")
            return lambda x: x
        stats = np.asarray(step.statistics_, dtype=float)
        return _column_subset(np.flatnonzero(~np.isnan(stats)), stats.size)
    if isinstance(step, StandardScaler):
        mean = step.mean_ if step.with_mean else None
        scale = step.scale_ if step.with_std else None

        def standardize(x: np.ndarray) -> np.ndarray:
            x = np.array(x, dtype=np.float64, copy=True)
            if mean is not None:
                x -= mean
            if scale is not None:
                x /= scale
            return x
        return standardize
    if isinstance(step, MinMaxScaler):
        if step.clip:
            raise NotCompilable("MinMaxScaler(clip=True)")
        scale_, min_ = step.scale_, step.min_

        def minmax(x: np.ndarray) -> np.ndarray:
            x = np.array(x, dtype=np.float64, copy=True)
            x *= scale_
            x += min_
            return x
        return minmax
    raise NotCompilable(type(step).__name__)


def _column_subset(keep: np.ndarray, width: int) -> Transform:
    if keep.size == width:
        return lambda x: x
    return lambda x: x[:, keep]


def compile_preprocess(pre: Any, features: list[str]) -> Transform:
    """A fitted ColumnTransformer (or a single transformer) -> function on the feature matrix."""
    from sklearn.compose import ColumnTransformer

    if not isinstance(pre, ColumnTransformer):
        return _compile_step(pre)
    if getattr(pre, "sparse_output_", False):
        raise NotCompilable("sparse ColumnTransformer output")
    position = {name: i for i, name in enumerate(features)}
    blocks: list[tuple[np.ndarray, Transform]] = []
    for _name, trans, cols in pre.transformers_:
        if trans == "drop":
            continue
        idx = _column_indices(cols, position, len(features))
        if idx.size == 0:
            continue
        blocks.append((idx, _compile_step(trans)))

    def transform(x: np.ndarray) -> np.ndarray:
        parts = [fn(x[:, idx]) for idx, fn in blocks]
        return parts[0] if len(parts) == 1 else np.hstack(parts)
    return transform


def _column_indices(cols: Any, position: dict[str, int], width: int) -> np.ndarray:
    if isinstance(cols, slice):
        return np.arange(width)[cols]
    cols = list(np.atleast_1d(cols))
    if cols and isinstance(cols[0], (bool, np.bool_)):
        return np.flatnonzero(cols)
    if cols and isinstance(cols[0], str):
        try:
            return np.array([position[c] for c in cols], dtype=np.intp)
        except KeyError as exc:
            raise NotCompilable(f"column {exc} is not a model feature") from None
    return np.asarray(cols, dtype=np.intp)


# --- tree ensembles ---------------------------------------------------------------------------

class CompiledForest:
    """All trees of a fitted forest in one node table, walked together for a small batch.

    Leaves point to themselves (threshold +inf, both children = the leaf), so every row can take
    ``depth`` steps without a per-step "am I done" test.
    """

    def __init__(self, trees: list[Any], n_classes: int):
        offsets, feats, thresholds, children, values = [], [], [], [], []
        base = 0
        depth = 0
        for tree in trees:
            t = tree.tree_
            n = t.node_count
            leaf = t.children_left == -1
            left = np.where(leaf, np.arange(n), t.children_left) + base
            right = np.where(leaf, np.arange(n), t.children_right) + base
            feats.append(np.where(leaf, 0, t.feature).astype(np.intp))
            thresholds.append(np.where(leaf, np.inf, t.threshold))
            children.append(np.stack([left, right], axis=1))
            v = t.value[:, 0, :n_classes].astype(np.float64)
            norm = v.sum(axis=1, keepdims=True)
            norm[norm == 0.0] = 1.0
            values.append(v / norm)  # what DecisionTreeClassifier.predict_proba returns
            offsets.append(base)
            base += n
            depth = max(depth, t.max_depth)
        self.roots = np.asarray(offsets, dtype=np.intp)
        self.feature = np.concatenate(feats)
        self.threshold = np.concatenate(thresholds)
        self.children = np.concatenate(children).astype(np.intp).ravel()  # [2*node + go_right]
        self.value = np.concatenate(values)
        self.tree_values = values  # per tree, for TreeApplyForest
        self.depth = depth
        self.n_trees = len(trees)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        # scikit-learn compares float32 features with float64 thresholds; do exactly that.
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        n_rows, n_feat = x32.shape
        flat = x32.ravel()
        row_base = (np.arange(n_rows, dtype=np.intp) * n_feat)[:, None]
        node = np.broadcast_to(self.roots, (n_rows, self.n_trees)).copy()
        for _ in range(self.depth):
            go_right = flat[row_base + self.feature[node]] > self.threshold[node]
            node = self.children[2 * node + go_right]
        # (trees, rows, classes) summed over axis 0 adds tree by tree, in order, like the forest.
        per_tree = self.value[node.T]
        total = np.add.reduce(per_tree, axis=0)
        if self.n_trees > 1:
            total /= self.n_trees
        return total


def compile_model(model: Any) -> CompiledForest:
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier

    if isinstance(model, (DecisionTreeClassifier, ExtraTreeClassifier)):
        if model.n_outputs_ != 1:
            raise NotCompilable("multi-output tree")
        return CompiledForest([model], model.n_classes_)
    if isinstance(model, (RandomForestClassifier, ExtraTreesClassifier)):
        if model.n_outputs_ != 1:
            raise NotCompilable("multi-output forest")
        return CompiledForest(list(model.estimators_), model.n_classes_)
    raise NotCompilable(type(model).__name__)


# --- the whole pipeline -----------------------------------------------------------------------

class TreeApplyForest:
    """Larger batches: scikit-learn's own Cython ``tree_.apply`` per tree (no per-call input
    validation), accumulated in tree order, rows split across threads.

    Splitting by rows keeps each row's summation order (tree 0, 1, 2...), so the result stays
    bit-identical to ``predict_proba``; ``apply`` releases the GIL, so chunks run in parallel.
    """

    MIN_ROWS_PER_THREAD = 128

    def __init__(self, trees: list[Any], values: list[np.ndarray], threads: int):
        self.trees = [t.tree_ for t in trees]
        self.values = values
        self.threads = max(1, threads)
        self._pool = None
        self._lock = threading.Lock()
        self._active = 0  # batches being predicted right now

    def _rows(self, x32: np.ndarray) -> np.ndarray:
        out = np.zeros((x32.shape[0], self.values[0].shape[1]))
        leaf_values = np.empty_like(out)
        for tree, value in zip(self.trees, self.values):
            # take into a reused buffer, add in place: same sums as ``out += value[leaves]``
            # at a third of the cost (this part holds the GIL; ``apply`` does not).
            np.take(value, tree.apply(x32), axis=0, out=leaf_values)
            np.add(out, leaf_values, out=out)
        if len(self.trees) > 1:
            out /= len(self.trees)
        return out

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        with self._lock:
            self._active += 1
            # Split across the threads other concurrent batches leave free: when every core
            # already runs a batch, splitting only adds switching and cache misses.
            k = min(self.threads // self._active, x32.shape[0] // self.MIN_ROWS_PER_THREAD)
            if k > 1 and self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="netsec-forest")
        try:
            if k <= 1:
                return self._rows(x32)
            chunks = np.array_split(x32, k)
            return np.vstack(list(self._pool.map(self._rows, chunks)))
        finally:
            with self._lock:
                self._active -= 1


class FastPipeline:
    """preprocess + model on a float feature matrix; ``predict_proba`` like the pipeline's.

    Up to ``SMALL_BATCH`` rows the compiled forest walks all trees level by level (one NumPy
    call per level beats 300 Cython calls); larger batches use :class:`TreeApplyForest`
    (measured crossover ~100 rows for 300 trees).
    """

    SMALL_BATCH = 64

    def __init__(self, preprocess: Transform, forest: CompiledForest, batch_model: Any):
        self.preprocess = preprocess
        self.forest = forest
        self.batch_model = batch_model

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = self.preprocess(x)
        if z.shape[0] <= self.SMALL_BATCH:
            return self.forest.predict_proba(z)
        return self.batch_model.predict_proba(z)


def _trees_of(model: Any) -> list[Any]:
    return list(model.estimators_) if hasattr(model, "estimators_") else [model]


def compile_pipeline(pipeline: Any, features: list[str], probe: np.ndarray,
                     reference: Callable[[np.ndarray], np.ndarray],
                     batch_threads: int = 1) -> tuple[FastPipeline | None, str]:
    """A verified fast path for ``pipeline``, or (None, why not).

    ``probe`` is a float matrix of valid rows; ``reference(probe)`` is the pipeline's own
    ``predict_proba`` on them. The fast path is kept only if it gives identical probabilities
    on the whole probe (the threaded batch path) and on its head (the small-batch path).
    """
    from sklearn.pipeline import Pipeline

    try:
        if isinstance(pipeline, Pipeline):
            pre_steps = [s for _, s in pipeline.steps[:-1]]
            final = pipeline.steps[-1][1]
            pre_fns = [compile_preprocess(s, features) if i == 0 else _compile_step(s)
                       for i, s in enumerate(pre_steps)]

            def preprocess(x: np.ndarray) -> np.ndarray:
                for fn in pre_fns:
                    x = fn(x)
                return x
        else:
            final, preprocess = pipeline, (lambda x: x)
        forest = compile_model(final)
        batch = TreeApplyForest(_trees_of(final), forest.tree_values, threads=batch_threads)
        fast = FastPipeline(preprocess, forest, batch)
    except NotCompilable as exc:
        return None, f"scikit-learn ({exc} has no fast path)"
    except Exception as exc:  # an unexpected fitted attribute layout: keep the safe path
        return None, f"scikit-learn (fast path failed to build: {type(exc).__name__})"
    try:
        expected = reference(probe)
        small = probe[: FastPipeline.SMALL_BATCH]
        same = (np.array_equal(fast.predict_proba(probe), expected)
                and np.array_equal(fast.predict_proba(small), expected[: len(small)]))
    except Exception as exc:
        return None, f"scikit-learn (fast path failed on probe rows: {type(exc).__name__})"
    if not same:
        return None, "scikit-learn (fast path disagreed on probe rows)"
    return fast, "compiled"

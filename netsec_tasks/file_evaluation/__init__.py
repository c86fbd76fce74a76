"""``netsec evaluate FILE``: score a labelled file with a registered model and report how it did;
also the pipeline's hold-out file (``evaluation.holdout_path``, :func:`evaluate_holdout`).

Intrusion data sets ship a separate, harder test file (other proportions, attack types the
training file never has). The internal test split says how well the model fits its own data;
this says how it does on that file:

1. The file is read like every other door reads one (header-less files by the schema's
   ``file_columns``) and goes through the input contract (:mod:`netsec_tasks.contract`): the
   feature rules, and the label check (a label the schema does not list is refused, naming it).
   Rows that break the contract are refused by default; ``invalid="flag"`` leaves them (and rows
   without a label) out and reports how many and why.
2. The model is the configured data set's Production version, or ``models:/<name>/<version>``
   (or ``models:/<name>@<alias>``). A model trained on other features, another target or another
   label mapping is refused (it is not a model of this data set).
3. Rows the version was trained on. The version records the hashes of its training rows
   (``netsec.train_hashes_uri``); scored rows identical to one of them are counted, and the
   headline figures are those of the rows it never saw, with the figures on every row beside
   them and a warning naming the overlap (a model graded on its own training rows looks better
   than it is). Without recorded hashes the report says the overlap is unknown. When
   ``invalid="flag"`` left out more than ``validation.max_invalid_share`` of the rows, a warning
   says the figures describe the rows left, not the file (``netsec evaluate`` exits 4).
4. The report: the threat class's F1, precision, recall, ROC AUC, PR AUC and accuracy; the
   confusion matrix ``[[TN, FP], [FN, TP]]``; per raw label (when the label is multi-class) the
   rows, whether it is a threat, the rows put in the right class and that share (for an attack
   type: the share detected; for a benign label: the share not flagged), and whether the label
   occurs in the model's training data; the reasons (:mod:`netsec_tasks.explain.reports`: mean
   |contribution| per column overall and per raw label, and the columns behind the false
   positives at the operating point); the plots. Written as YAML and as one self-contained HTML
   page (inline CSS, images embedded), and logged to MLflow: a run (tag ``netsec.role =
   evaluation``) whose metrics are linked to the model version's logged model, with the reports
   as artifacts; the model version gets the tags ``netsec.evaluation_run_id`` and
   ``netsec.evaluation`` (the headline figures as JSON).

Modules: :mod:`.model` (which version, what it was trained on), :mod:`.figures` (metrics order,
per-label recall, plots), :mod:`.report` (the HTML page), :mod:`.mlflow_log` (the MLflow run and
version tags), :mod:`.evaluate` (:func:`evaluate_file`) and :mod:`.holdout`
(:func:`evaluate_holdout`, after training).
"""

from netsec_tasks.file_evaluation.evaluate import evaluate_file
from netsec_tasks.file_evaluation.holdout import evaluate_holdout
from netsec_tasks.file_evaluation.report import render_html

__all__ = ["evaluate_file", "evaluate_holdout", "render_html"]

"""The MLflow Model Registry: step 6 of the pipeline, and every other use of Production.

The public face of the registry; import from here. One module per concern:

=====================  ===========================================================================
module                 concern
=====================  ===========================================================================
``lookup``             which version is Production (alias, else stage), which is the challenger;
                       every version; loading one
``comparable``         whether a version is a model of this data set (features, target, labels)
``scoring``            a model's figures on a test split at its own operating point (its threshold);
                       which test rows Production trained on
``promotion``          the decision (within the false-positive budget, beats Production's recall,
                       no threat label loses recall?), recording it, promoting (or, with
                       ``registry.shadow``, making it the challenger)
``challenger``         ending a challenger's shadow: promote it, or retire it with the reason
``registration``       the ``register`` step: register the winner (idempotent), then decide
``revert``             ``netsec rollback``: move Production back to an earlier version
=====================  ===========================================================================

With ``registry.shadow`` a version that passes the gate becomes the *challenger* (alias
``registry.challenger_alias``), scored in shadow by serving until monitoring or an operator
promotes or retires it.

The Production model is the version holding alias ``registry.alias`` *and* stage "Production"
(stages are deprecated since MLflow 2.9 but kept for clients that read
``models:/<name>/Production``); the alias is the source of truth.
"""

from __future__ import annotations

from netsec_tasks.registry.challenger import promote_challenger, retire_challenger
from netsec_tasks.registry.comparable import check_comparable, differences
from netsec_tasks.registry.lookup import (
    PRODUCTION_STAGE,
    ProductionModel,
    all_versions,
    challenger_version,
    find_alias_version,
    find_production_version,
    get_production,
    load_production_model,
    load_version,
    production_reference,
    production_reference_uri,
    production_version,
)
from netsec_tasks.registry.promotion import (
    CHALLENGER_SINCE_TAG,
    PROMOTION_TAG,
    SHADOW_OUTCOME_TAG,
    SHADOW_REASON_TAG,
    Decision,
    apply_decision,
    decide_version,
    promote,
    set_challenger,
)
from netsec_tasks.registry.registration import register
from netsec_tasks.registry.revert import rollback
from netsec_tasks.registry.scoring import (
    TestRows,
    TestSplit,
    VersionScore,
    check_test_columns,
    label_recall,
    production_rows_in,
    production_score,
    score_version,
)

__all__ = [
    "CHALLENGER_SINCE_TAG",
    "PRODUCTION_STAGE",
    "PROMOTION_TAG",
    "SHADOW_OUTCOME_TAG",
    "SHADOW_REASON_TAG",
    "Decision",
    "ProductionModel",
    "TestRows",
    "TestSplit",
    "VersionScore",
    "all_versions",
    "apply_decision",
    "challenger_version",
    "check_comparable",
    "check_test_columns",
    "decide_version",
    "differences",
    "find_alias_version",
    "find_production_version",
    "get_production",
    "label_recall",
    "load_production_model",
    "load_version",
    "production_reference",
    "production_reference_uri",
    "production_rows_in",
    "production_score",
    "production_version",
    "promote",
    "promote_challenger",
    "register",
    "retire_challenger",
    "rollback",
    "score_version",
    "set_challenger",
]

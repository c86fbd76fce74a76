"""The MLflow Model Registry: step 6 of the pipeline, and every other use of Production.

The public face of the registry; import from here. One module per concern:

=====================  ===========================================================================
module                 concern
=====================  ===========================================================================
``lookup``             which version is Production (alias, else stage); every version; loading one
``comparable``         whether a version is a model of this data set (features, target, labels)
``scoring``            a model's score on a test split; which test rows Production trained on
``promotion``          the decision (does a version beat Production?), recording it, promoting
``registration``       the ``register`` step: register the winner (idempotent), then decide
``revert``             ``netsec rollback``: move Production back to an earlier version
=====================  ===========================================================================

The Production model is the version holding alias ``registry.alias`` *and* stage "Production"
(stages are deprecated since MLflow 2.9 but kept for clients that read
``models:/<name>/Production``); the alias is the source of truth.
"""

from __future__ import annotations

from netsec_tasks.registry.comparable import check_comparable, differences
from netsec_tasks.registry.lookup import (
    PRODUCTION_STAGE,
    ProductionModel,
    all_versions,
    find_production_version,
    get_production,
    load_production_model,
    load_version,
    production_reference,
    production_reference_uri,
    production_version,
)
from netsec_tasks.registry.promotion import PROMOTION_TAG, Decision, apply_decision, decide_version, promote
from netsec_tasks.registry.registration import register
from netsec_tasks.registry.revert import rollback
from netsec_tasks.registry.scoring import (
    check_test_columns,
    production_rows_in,
    production_score,
    score_model,
)

__all__ = [
    "PRODUCTION_STAGE",
    "PROMOTION_TAG",
    "Decision",
    "ProductionModel",
    "all_versions",
    "apply_decision",
    "check_comparable",
    "check_test_columns",
    "decide_version",
    "differences",
    "find_production_version",
    "get_production",
    "load_production_model",
    "load_version",
    "production_reference",
    "production_reference_uri",
    "production_rows_in",
    "production_score",
    "production_version",
    "promote",
    "register",
    "rollback",
    "score_model",
]

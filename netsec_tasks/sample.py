"""Deterministic synthetic phishing data with the UCI schema (``netsec make-sample``).

Same columns, dtypes and value sets as the UCI Phishing Websites data, the same class balance
(44.3% phishing) and the same per-class frequency of every feature value (the table below is the
aggregate of the real file: frequencies only, no rows). Features depend on each other within a
class through a Gaussian copula with two latent factors (a "page tricks" group and a "domain
reputation" group, as in the real data), so models have structure to learn beyond naive Bayes.

``shift`` moves the per-class frequencies of the first ``shift_columns`` columns towards a
reversed distribution: a genuinely shifted copy for drift tests and demos.

``missing`` blanks that share of the feature cells (never the label), each cell independently,
from a random stream of its own: the values that stay are exactly those of the same sample
without gaps, so data sets with and without gaps can be compared row by row. Columns holding
gaps are float64 (NaN); a CSV written from the frame has empty cells there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm

TARGET = "Result"
THREAT_LABEL = -1
THREAT_PRIOR = 0.4431

# (column, values, P(value | phishing), P(value | legitimate)), from the UCI file's aggregates.
FEATURES: list[tuple[str, list[int], list[float], list[float]]] = [
    ("having_IP_Address", [-1, 1], [0.393, 0.607], [0.303, 0.697]),
    ("URL_Length", [-1, 0, 1], [0.833, 0.017, 0.15], [0.793, 0.008, 0.199]),
    ("Shortining_Service", [-1, 1], [0.105, 0.895], [0.151, 0.849]),
    ("having_At_Symbol", [-1, 1], [0.171, 0.829], [0.133, 0.867]),
    ("double_slash_redirecting", [-1, 1], [0.115, 0.885], [0.141, 0.859]),
    ("Prefix_Suffix", [-1, 1], [1.0, 0.0], [0.762, 0.238]),
    ("having_Sub_Domain", [-1, 0, 1], [0.375, 0.46, 0.165], [0.248, 0.223, 0.529]),
    ("SSLfinal_State", [-1, 0, 1], [0.623, 0.234, 0.143], [0.082, 0.003, 0.914]),
    ("Domain_registeration_length", [-1, 1], [0.549, 0.451], [0.763, 0.237]),
    ("Favicon", [-1, 1], [0.186, 0.814], [0.186, 0.814]),
    ("port", [-1, 1], [0.15, 0.85], [0.125, 0.875]),
    ("HTTPS_token", [-1, 1], [0.146, 0.854], [0.176, 0.824]),
    ("Request_URL", [-1, 1], [0.546, 0.454], [0.296, 0.704]),
    ("URL_of_Anchor", [-1, 0, 1], [0.663, 0.307, 0.031], [0.006, 0.623, 0.371]),
    ("Links_in_tags", [-1, 0, 1], [0.487, 0.356, 0.157], [0.255, 0.439, 0.306]),
    ("SFH", [-1, 0, 1], [0.865, 0.054, 0.081], [0.682, 0.081, 0.237]),
    ("Submitting_to_email", [-1, 1], [0.19, 0.81], [0.176, 0.824]),
    ("Abnormal_URL", [-1, 1], [0.123, 0.877], [0.166, 0.834]),
    ("Redirect", [0, 1], [0.877, 0.123], [0.89, 0.11]),
    ("on_mouseover", [-1, 1], [0.134, 0.866], [0.107, 0.893]),
    ("RightClick", [-1, 1], [0.046, 0.954], [0.041, 0.959]),
    ("popUpWidnow", [-1, 1], [0.193, 0.807], [0.193, 0.807]),
    ("Iframe", [-1, 1], [0.09, 0.91], [0.092, 0.908]),
    ("age_of_domain", [-1, 1], [0.537, 0.463], [0.415, 0.585]),
    ("DNSRecord", [-1, 1], [0.351, 0.649], [0.28, 0.72]),
    ("web_traffic", [-1, 0, 1], [0.342, 0.351, 0.308], [0.159, 0.138, 0.702]),
    ("Page_Rank", [-1, 1], [0.793, 0.207], [0.701, 0.299]),
    ("Google_Index", [-1, 1], [0.189, 0.811], [0.099, 0.901]),
    ("Links_pointing_to_page", [-1, 0, 1], [0.039, 0.598, 0.363], [0.058, 0.524, 0.418]),
    ("Statistical_report", [-1, 1], [0.171, 0.829], [0.115, 0.885]),
]
FEATURE_NAMES = [f[0] for f in FEATURES]
_MISSING_STREAM = 0x6D697373  # "miss": the random stream that places the gaps

# Latent groups (columns that move together within a class in the real data).
_PAGE_TRICKS = {
    "Favicon",
    "popUpWidnow",
    "Iframe",
    "on_mouseover",
    "RightClick",
    "port",
    "Submitting_to_email",
    "double_slash_redirecting",
    "HTTPS_token",
    "Abnormal_URL",
    "Shortining_Service",
    "having_At_Symbol",
    "Redirect",
}
_REPUTATION = {
    "Domain_registeration_length",
    "age_of_domain",
    "DNSRecord",
    "web_traffic",
    "Page_Rank",
    "Google_Index",
    "Statistical_report",
    "SSLfinal_State",
}


def _loadings() -> np.ndarray:
    lam = np.zeros((len(FEATURES), 2))
    for i, name in enumerate(FEATURE_NAMES):
        if name in _PAGE_TRICKS:
            lam[i, 0] = 0.75
        if name in _REPUTATION:
            lam[i, 1] = 0.5
    return lam


def make_sample(
    n_rows: int = 4000, seed: int = 0, shift: float = 0.0, shift_columns: int = 10, missing: float = 0.0
) -> pd.DataFrame:
    """``n_rows`` synthetic rows; same ``seed`` -> identical frame.

    ``shift`` in [0, 1]; ``missing`` in [0, 1): the share of feature cells left empty (NaN).
    Raises ValueError for values outside those ranges.
    """
    if n_rows < 1:
        raise ValueError("n_rows must be at least 1")
    if not 0.0 <= shift <= 1.0:
        raise ValueError("shift must be between 0 and 1")
    if not 0.0 <= missing < 1.0:
        raise ValueError("missing must be at least 0 and below 1")
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n_rows) < THREAT_PRIOR, THREAT_LABEL, 1)
    lam = _loadings()
    factors = rng.standard_normal((n_rows, lam.shape[1]))
    noise_sd = np.sqrt(np.clip(1.0 - (lam**2).sum(axis=1), 0.05, None))
    latent = factors @ lam.T + rng.standard_normal((n_rows, len(FEATURES))) * noise_sd
    u = norm.cdf(latent)  # uniform margins, dependent across columns
    out: dict[str, np.ndarray] = {}
    for j, (name, values, p_threat, p_legit) in enumerate(FEATURES):
        col = np.empty(n_rows, dtype=np.int64)
        for label, probs in ((THREAT_LABEL, p_threat), (1, p_legit)):
            p = np.asarray(probs, dtype=float)
            if shift and j < shift_columns:
                p = (1 - shift) * p + shift * p[::-1]
            cum = np.cumsum(p / p.sum())
            mask = y == label
            idx = np.searchsorted(cum, u[mask, j], side="right")
            col[mask] = np.asarray(values)[np.minimum(idx, len(values) - 1)]
        out[name] = col
    frame = pd.DataFrame(out)
    if missing:
        # A stream of its own (seed, "missing"), so the gaps do not change the other values.
        gaps = np.random.default_rng([seed, _MISSING_STREAM]).random((n_rows, len(FEATURES))) < missing
        for j, name in enumerate(FEATURE_NAMES):
            if gaps[:, j].any():
                frame[name] = frame[name].astype(np.float64).mask(gaps[:, j])
    frame[TARGET] = y.astype(np.int64)
    return frame

"""Deterministic synthetic network-intrusion data: the worked example of a new data set.

``config/schema/intrusion_demo.yaml`` describes it; ``docs/new-dataset.md`` walks through it;
the tests train, evaluate and serve it from that schema file alone. It has what real intrusion
sets (KDD Cup 99, NSL-KDD) have and the UCI phishing data lacks:

- **no header row**: the schema's ``file_columns`` names the columns in file order;
- **categorical features**: ``protocol_type`` (3 values), ``service`` (66 values, a long tail)
  and ``flag`` (11 values), next to counts, byte volumes and rates;
- a **multi-class label**: ``normal`` or one of several attack names, mapped to the binary
  threat class by ``negative: [normal]`` ("every label but normal is a threat");
- an ignored column (``difficulty``) and a few missing values (``duration``);
- a **separate, harder hold-out file** (``holdout=True``): other proportions and four attack
  types the training file never has (``mailbomb``, ``processtable``, ``apache2``,
  ``snmpguess``), some of which look like normal traffic, so per-label recall on it is uneven.

Every attack type has its own traffic signature (a SYN flood has ``flag=S0`` and a high
``serror_rate``, an ICMP flood ``service=ecr_i`` and fixed byte sizes...), loosely after the
KDD Cup 99 task description; the numbers are invented, not aggregates of a real file.
Same ``n_rows``, ``seed`` and ``holdout`` -> the same frame, on every machine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

DATASET = "intrusion_demo"
TARGET = "label"
BENIGN = "normal"

PROTOCOLS = ["tcp", "udp", "icmp"]
FLAGS = ["SF", "S0", "REJ", "RSTO", "RSTR", "RSTOS0", "SH", "S1", "S2", "S3", "OTH"]
# The 66 service names of the NSL-KDD files (a long-tailed categorical column).
SERVICES = [
    "http",
    "smtp",
    "ftp_data",
    "ftp",
    "domain_u",
    "private",
    "ecr_i",
    "eco_i",
    "telnet",
    "finger",
    "other",
    "auth",
    "pop_3",
    "imap4",
    "urp_i",
    "ntp_u",
    "time",
    "IRC",
    "X11",
    "ssh",
    "sunrpc",
    "whois",
    "uucp",
    "nntp",
    "gopher",
    "discard",
    "systat",
    "daytime",
    "netstat",
    "echo",
    "login",
    "shell",
    "exec",
    "kshell",
    "klogin",
    "csnet_ns",
    "iso_tsap",
    "hostnames",
    "supdup",
    "name",
    "netbios_ns",
    "netbios_dgm",
    "netbios_ssn",
    "sql_net",
    "vmnet",
    "bgp",
    "Z39_50",
    "ldap",
    "link",
    "mtp",
    "courier",
    "ctf",
    "efs",
    "http_443",
    "remote_job",
    "rje",
    "printer",
    "pm_dump",
    "tim_i",
    "red_i",
    "urh_i",
    "tftp_u",
    "harvest",
    "aol",
    "http_8001",
    "http_2784",
]
FILE_COLUMNS = [
    "duration",
    "protocol_type",
    "service",
    "flag",
    "src_bytes",
    "dst_bytes",
    "logged_in",
    "count",
    "srv_count",
    "serror_rate",
    "rerror_rate",
    "same_srv_rate",
    "dst_host_count",
    "dst_host_srv_count",
    TARGET,
    "difficulty",
]

# Label -> share of rows. The hold-out file has other proportions and four unseen attacks.
TRAIN_MIX = {
    "normal": 0.53,
    "neptune": 0.20,
    "smurf": 0.08,
    "portsweep": 0.05,
    "satan": 0.05,
    "back": 0.03,
    "guess_passwd": 0.03,
    "ipsweep": 0.03,
}
HOLDOUT_MIX = {
    "normal": 0.45,
    "neptune": 0.14,
    "smurf": 0.04,
    "portsweep": 0.03,
    "satan": 0.04,
    "back": 0.02,
    "guess_passwd": 0.06,
    "ipsweep": 0.02,
    "mailbomb": 0.06,
    "processtable": 0.05,
    "apache2": 0.06,
    "snmpguess": 0.03,
}
KNOWN_ATTACKS = [k for k in TRAIN_MIX if k != BENIGN]
NOVEL_ATTACKS = [k for k in HOLDOUT_MIX if k not in TRAIN_MIX]
NULL_SHARE = 0.01  # of `duration`, in both files


# A column drawn for ``n`` rows of one label: ``(rng, n) -> array of n values``.
Draw = Callable[[np.random.Generator, int], np.ndarray]
# A column of a traffic signature: the same value on every row, or a draw.
Column = str | int | float | Draw
# Generates the feature columns (FILE_COLUMNS without label and difficulty) of ``n`` rows.
RowGenerator = Callable[[np.random.Generator, int], dict[str, np.ndarray]]
FEATURES = FILE_COLUMNS[: FILE_COLUMNS.index(TARGET)]


def _pick(
    rng: np.random.Generator,
    values: list[str],
    n: int,
    weights: dict[str, float] | None = None,
    tail: float = 0.0,
) -> np.ndarray:
    """``n`` draws from ``values``: ``weights`` for the named ones, ``tail`` spread over the rest."""
    weights = weights or {}
    p = np.array([weights.get(v, 0.0) for v in values], dtype=float)
    rest = [i for i, v in enumerate(values) if v not in weights]
    if tail and rest:
        p[rest] = tail / len(rest)
    if p.sum() == 0:
        p[:] = 1.0
    return rng.choice(np.array(values, dtype=object), size=n, p=p / p.sum())


def _lognormal(rng, n, mean, sd, lo=0, hi=None) -> np.ndarray:
    out = np.round(rng.lognormal(mean, sd, n))
    return np.clip(out, lo, hi if hi is not None else np.inf).astype(np.int64)


def _rate(rng, n, a, b) -> np.ndarray:
    return np.round(rng.beta(a, b, n), 2)


def _counts(rng, n, lo, hi) -> np.ndarray:
    return rng.integers(lo, hi + 1, n).astype(np.int64)


def pick(values: list[str], weights: dict[str, float] | None = None, tail: float = 0.0) -> Draw:
    """Draw of :func:`_pick`: ``weights`` for the named values, ``tail`` spread over the rest."""
    return lambda rng, n: _pick(rng, values, n, weights, tail)


def lognormal(mean: float, sd: float, hi: float | None = None) -> Draw:
    """Draw of whole numbers from a log-normal, at most ``hi``."""
    return lambda rng, n: _lognormal(rng, n, mean, sd, hi=hi)


def rate(a: float, b: float) -> Draw:
    """Draw of a share in [0, 1] (two decimals), Beta(a, b)."""
    return lambda rng, n: _rate(rng, n, a, b)


def counts(lo: int, hi: int) -> Draw:
    """Draw of whole numbers from ``lo`` to ``hi``, uniform."""
    return lambda rng, n: _counts(rng, n, lo, hi)


def exponential(mean: float, zero_share: float = 0.0) -> Draw:
    """Draw of durations in seconds (one decimal): exponential with ``mean``; a ``zero_share``
    of the rows 0."""

    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        if not zero_share:
            return np.round(rng.exponential(mean, n), 1)
        return np.where(rng.random(n) < zero_share, 0.0, np.round(rng.exponential(mean, n), 1))

    return draw


def _columns(rng: np.random.Generator, n: int, signature: dict[str, Column]) -> dict[str, np.ndarray]:
    """The signature's columns for ``n`` rows, drawn in FILE_COLUMNS order (the order fixes what
    a seed gives); a constant is repeated (a string as an object array)."""
    out = {}
    for name in FEATURES:
        if name not in signature:
            continue
        column = signature[name]
        if callable(column):
            out[name] = column(rng, n)
        else:
            out[name] = np.full(n, column, dtype=object if isinstance(column, str) else None)
    return out


def _normal(rng, n):
    proto = _pick(rng, PROTOCOLS, n, {"tcp": 0.8, "udp": 0.15, "icmp": 0.05})
    service = np.where(
        proto == "tcp",
        _pick(
            rng,
            SERVICES,
            n,
            {
                "http": 0.5,
                "smtp": 0.12,
                "ftp_data": 0.1,
                "ftp": 0.04,
                "telnet": 0.02,
                "pop_3": 0.02,
                "imap4": 0.01,
                "ssh": 0.01,
            },
            tail=0.18,
        ),
        np.where(
            proto == "udp",
            _pick(rng, SERVICES, n, {"domain_u": 0.7, "ntp_u": 0.15, "private": 0.1, "other": 0.05}),
            _pick(rng, SERVICES, n, {"eco_i": 0.5, "ecr_i": 0.3, "urp_i": 0.15, "tim_i": 0.05}),
        ),
    )
    return dict(
        duration=np.where(rng.random(n) < 0.85, 0.0, np.round(rng.exponential(300, n), 1)),
        protocol_type=proto,
        service=service,
        flag=_pick(rng, FLAGS, n, {"SF": 0.93, "REJ": 0.02, "S0": 0.01, "RSTO": 0.02}, tail=0.02),
        src_bytes=_lognormal(rng, n, 5.5, 1.5),
        dst_bytes=_lognormal(rng, n, 7.0, 2.0),
        logged_in=(proto == "tcp").astype(np.int64) * (rng.random(n) < 0.9),
        count=np.minimum(rng.poisson(8, n), 511),
        srv_count=np.minimum(rng.poisson(10, n), 511),
        serror_rate=_rate(rng, n, 0.3, 20),
        rerror_rate=_rate(rng, n, 0.3, 20),
        same_srv_rate=_rate(rng, n, 8, 1),
        dst_host_count=_counts(rng, n, 1, 255),
        dst_host_srv_count=_counts(rng, n, 20, 255),
    )


# An attack's connections unless its signature says otherwise: TCP, instant, empty, not logged
# in, no errors, every one to the same service.
ATTACK_DEFAULTS: dict[str, Column] = {
    "duration": 0.0,
    "protocol_type": "tcp",
    "src_bytes": 0,
    "dst_bytes": 0,
    "logged_in": 0,
    "serror_rate": 0.0,
    "rerror_rate": 0.0,
    "same_srv_rate": 1.0,
}


def attack(**signature: Column) -> RowGenerator:
    """The generator of an attack's rows: :data:`ATTACK_DEFAULTS` with ``signature`` over them."""
    columns = {**ATTACK_DEFAULTS, **signature}
    return lambda rng, n: _columns(rng, n, columns)


def disguised(**signature: Column) -> RowGenerator:
    """The generator of an attack that looks like normal traffic: normal rows with ``signature``
    over them (drawn after the normal rows)."""
    return lambda rng, n: {**_normal(rng, n), **_columns(rng, n, signature)}


# Label -> its rows' generator, in the order a sample draws them (the order fixes what a seed
# gives). Every attack type has its own signature.
GENERATORS: dict[str, RowGenerator] = {
    "normal": _normal,
    "neptune": attack(  # SYN flood
        service=pick(SERVICES, {"private": 0.5}, tail=0.5),
        flag=pick(FLAGS, {"S0": 0.9, "REJ": 0.1}),
        count=counts(100, 511),
        srv_count=counts(1, 30),
        serror_rate=rate(30, 1),
        rerror_rate=rate(1, 15),
        same_srv_rate=rate(1, 15),
        dst_host_count=255,
        dst_host_srv_count=counts(1, 30),
    ),
    "smurf": attack(  # ICMP echo-reply flood
        protocol_type="icmp",
        service="ecr_i",
        flag="SF",
        src_bytes=lambda rng, n: rng.choice([520, 1032], n).astype(np.int64),
        count=counts(300, 511),
        srv_count=counts(300, 511),
        dst_host_count=255,
        dst_host_srv_count=255,
    ),
    "portsweep": attack(
        duration=exponential(2000, zero_share=0.7),
        service=pick(SERVICES, {"private": 0.6, "other": 0.1}, tail=0.3),
        flag=pick(FLAGS, {"REJ": 0.4, "RSTR": 0.4, "RSTOS0": 0.1, "SH": 0.1}),
        count=counts(1, 5),
        srv_count=counts(1, 5),
        serror_rate=rate(1, 10),
        rerror_rate=rate(10, 2),
        same_srv_rate=rate(3, 3),
        dst_host_count=counts(1, 255),
        dst_host_srv_count=counts(1, 10),
    ),
    "satan": attack(  # probes every service
        protocol_type=pick(PROTOCOLS, {"tcp": 0.85, "udp": 0.15}),
        service=pick(SERVICES, tail=1.0),
        flag=pick(FLAGS, {"REJ": 0.6, "S0": 0.2, "SF": 0.1, "RSTO": 0.1}),
        src_bytes=lognormal(1.0, 1.0, hi=200),
        count=counts(1, 200),
        srv_count=counts(1, 5),
        serror_rate=rate(2, 6),
        rerror_rate=rate(8, 2),
        same_srv_rate=rate(1, 12),
        dst_host_count=counts(100, 255),
        dst_host_srv_count=counts(1, 20),
    ),
    "back": attack(  # web server DoS with long URLs
        duration=lambda rng, n: np.where(rng.random(n) < 0.9, 0.0, 1.0),
        service="http",
        flag=pick(FLAGS, {"SF": 0.8, "RSTR": 0.2}),
        src_bytes=counts(54000, 54600),
        dst_bytes=counts(7000, 8400),
        logged_in=1,
        count=counts(1, 20),
        srv_count=counts(1, 20),
        serror_rate=rate(1, 20),
        rerror_rate=rate(1, 20),
        dst_host_count=counts(50, 255),
        dst_host_srv_count=counts(50, 255),
    ),
    "guess_passwd": attack(
        duration=exponential(3),
        service=pick(SERVICES, {"telnet": 0.8, "pop_3": 0.1, "imap4": 0.1}),
        flag=pick(FLAGS, {"RSTO": 0.6, "SF": 0.4}),
        src_bytes=counts(100, 150),
        dst_bytes=counts(150, 200),
        count=counts(1, 3),
        srv_count=counts(1, 3),
        rerror_rate=rate(2, 8),
        dst_host_count=counts(1, 30),
        dst_host_srv_count=counts(1, 30),
    ),
    "ipsweep": attack(
        protocol_type="icmp",
        service=pick(SERVICES, {"eco_i": 0.9, "ecr_i": 0.1}),
        flag="SF",
        src_bytes=counts(8, 18),
        count=counts(1, 2),
        srv_count=counts(1, 40),
        dst_host_count=counts(1, 100),
        dst_host_srv_count=counts(1, 10),
    ),
    # Attacks only the hold-out file has.
    "mailbomb": disguised(  # looks like ordinary mail: mostly missed
        protocol_type="tcp",
        service="smtp",
        flag="SF",
        src_bytes=counts(2500, 2700),
        dst_bytes=counts(250, 330),
        logged_in=1,
        count=counts(1, 60),
    ),
    "processtable": attack(  # holds connections open: long, empty
        duration=lambda rng, n: np.round(rng.uniform(1500, 3000, n), 1),
        service=pick(SERVICES, {"finger": 0.5, "http": 0.3}, tail=0.2),
        flag=pick(FLAGS, {"SF": 0.6, "S0": 0.2, "RSTO": 0.2}),
        count=counts(1, 10),
        srv_count=counts(1, 10),
        serror_rate=rate(2, 5),
        rerror_rate=rate(1, 10),
        same_srv_rate=rate(5, 2),
        dst_host_count=counts(1, 255),
        dst_host_srv_count=counts(1, 100),
    ),
    "apache2": attack(
        service="http",
        flag=pick(FLAGS, {"RSTR": 0.4, "S3": 0.3, "SF": 0.3}),
        src_bytes=lognormal(4.0, 1.0),
        count=counts(50, 300),
        srv_count=counts(50, 300),
        serror_rate=rate(3, 3),
        rerror_rate=rate(3, 3),
        dst_host_count=counts(100, 255),
        dst_host_srv_count=counts(100, 255),
    ),
    "snmpguess": disguised(  # small UDP requests to 'private': looks normal
        protocol_type="udp",
        service="private",
        flag="SF",
        src_bytes=counts(30, 45),
        dst_bytes=0,
        logged_in=0,
    ),
}


def make_intrusion_sample(n_rows: int = 2000, seed: int = 0, *, holdout: bool = False) -> pd.DataFrame:
    """``n_rows`` rows in :data:`FILE_COLUMNS` order; ``holdout=True``: the harder test file.

    Same arguments -> identical frame. Rows are shuffled (labels are not in blocks).
    """
    if n_rows < 1:
        raise ValueError("n_rows must be at least 1")
    rng = np.random.default_rng([seed, int(holdout)])
    mix = HOLDOUT_MIX if holdout else TRAIN_MIX
    labels = rng.choice(list(mix), size=n_rows, p=np.array(list(mix.values())) / sum(mix.values()))
    parts = []
    for label, gen in GENERATORS.items():
        n = int((labels == label).sum())
        if not n:
            continue
        part = pd.DataFrame(gen(rng, n))
        part[TARGET] = label
        part["difficulty"] = rng.integers(1, 22, n).astype(np.int64)
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    frame = frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)
    frame["duration"] = frame["duration"].astype(float).where(rng.random(len(frame)) >= NULL_SHARE)
    for col in (
        "src_bytes",
        "dst_bytes",
        "logged_in",
        "count",
        "srv_count",
        "dst_host_count",
        "dst_host_srv_count",
    ):
        frame[col] = frame[col].astype(np.int64)
    return frame[FILE_COLUMNS]


def write_intrusion_sample(
    path: str | Path, n_rows: int = 2000, seed: int = 0, *, holdout: bool = False, header: bool = False
) -> Path:
    """Write :func:`make_intrusion_sample` as CSV, without a header row unless ``header``
    (atomically: a reader never sees half a file)."""
    from netsec_tasks.storage import atomic_path

    with atomic_path(path) as tmp:
        make_intrusion_sample(n_rows, seed, holdout=holdout).to_csv(tmp, index=False, header=header)
    return Path(path)

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


def _neptune(rng, n):  # SYN flood
    return dict(
        duration=np.zeros(n),
        protocol_type=np.full(n, "tcp", dtype=object),
        service=_pick(rng, SERVICES, n, {"private": 0.5}, tail=0.5),
        flag=_pick(rng, FLAGS, n, {"S0": 0.9, "REJ": 0.1}),
        src_bytes=np.zeros(n, np.int64),
        dst_bytes=np.zeros(n, np.int64),
        logged_in=np.zeros(n, np.int64),
        count=_counts(rng, n, 100, 511),
        srv_count=_counts(rng, n, 1, 30),
        serror_rate=_rate(rng, n, 30, 1),
        rerror_rate=_rate(rng, n, 1, 15),
        same_srv_rate=_rate(rng, n, 1, 15),
        dst_host_count=np.full(n, 255, np.int64),
        dst_host_srv_count=_counts(rng, n, 1, 30),
    )


def _smurf(rng, n):  # ICMP echo-reply flood
    return dict(
        duration=np.zeros(n),
        protocol_type=np.full(n, "icmp", dtype=object),
        service=np.full(n, "ecr_i", dtype=object),
        flag=np.full(n, "SF", dtype=object),
        src_bytes=rng.choice([520, 1032], n).astype(np.int64),
        dst_bytes=np.zeros(n, np.int64),
        logged_in=np.zeros(n, np.int64),
        count=_counts(rng, n, 300, 511),
        srv_count=_counts(rng, n, 300, 511),
        serror_rate=np.zeros(n),
        rerror_rate=np.zeros(n),
        same_srv_rate=np.ones(n),
        dst_host_count=np.full(n, 255, np.int64),
        dst_host_srv_count=np.full(n, 255, np.int64),
    )


def _portsweep(rng, n):
    return dict(
        duration=np.where(rng.random(n) < 0.7, 0.0, np.round(rng.exponential(2000, n), 1)),
        protocol_type=np.full(n, "tcp", dtype=object),
        service=_pick(rng, SERVICES, n, {"private": 0.6, "other": 0.1}, tail=0.3),
        flag=_pick(rng, FLAGS, n, {"REJ": 0.4, "RSTR": 0.4, "RSTOS0": 0.1, "SH": 0.1}),
        src_bytes=np.zeros(n, np.int64),
        dst_bytes=np.zeros(n, np.int64),
        logged_in=np.zeros(n, np.int64),
        count=_counts(rng, n, 1, 5),
        srv_count=_counts(rng, n, 1, 5),
        serror_rate=_rate(rng, n, 1, 10),
        rerror_rate=_rate(rng, n, 10, 2),
        same_srv_rate=_rate(rng, n, 3, 3),
        dst_host_count=_counts(rng, n, 1, 255),
        dst_host_srv_count=_counts(rng, n, 1, 10),
    )


def _satan(rng, n):  # probes every service
    proto = _pick(rng, PROTOCOLS, n, {"tcp": 0.85, "udp": 0.15})
    return dict(
        duration=np.zeros(n),
        protocol_type=proto,
        service=_pick(rng, SERVICES, n, tail=1.0),
        flag=_pick(rng, FLAGS, n, {"REJ": 0.6, "S0": 0.2, "SF": 0.1, "RSTO": 0.1}),
        src_bytes=_lognormal(rng, n, 1.0, 1.0, hi=200),
        dst_bytes=np.zeros(n, np.int64),
        logged_in=np.zeros(n, np.int64),
        count=_counts(rng, n, 1, 200),
        srv_count=_counts(rng, n, 1, 5),
        serror_rate=_rate(rng, n, 2, 6),
        rerror_rate=_rate(rng, n, 8, 2),
        same_srv_rate=_rate(rng, n, 1, 12),
        dst_host_count=_counts(rng, n, 100, 255),
        dst_host_srv_count=_counts(rng, n, 1, 20),
    )


def _back(rng, n):  # web server DoS with long URLs
    return dict(
        duration=np.where(rng.random(n) < 0.9, 0.0, 1.0),
        protocol_type=np.full(n, "tcp", dtype=object),
        service=np.full(n, "http", dtype=object),
        flag=_pick(rng, FLAGS, n, {"SF": 0.8, "RSTR": 0.2}),
        src_bytes=_counts(rng, n, 54000, 54600),
        dst_bytes=_counts(rng, n, 7000, 8400),
        logged_in=np.ones(n, np.int64),
        count=_counts(rng, n, 1, 20),
        srv_count=_counts(rng, n, 1, 20),
        serror_rate=_rate(rng, n, 1, 20),
        rerror_rate=_rate(rng, n, 1, 20),
        same_srv_rate=np.ones(n),
        dst_host_count=_counts(rng, n, 50, 255),
        dst_host_srv_count=_counts(rng, n, 50, 255),
    )


def _guess_passwd(rng, n):
    return dict(
        duration=np.round(rng.exponential(3, n), 1),
        protocol_type=np.full(n, "tcp", dtype=object),
        service=_pick(rng, SERVICES, n, {"telnet": 0.8, "pop_3": 0.1, "imap4": 0.1}),
        flag=_pick(rng, FLAGS, n, {"RSTO": 0.6, "SF": 0.4}),
        src_bytes=_counts(rng, n, 100, 150),
        dst_bytes=_counts(rng, n, 150, 200),
        logged_in=np.zeros(n, np.int64),
        count=_counts(rng, n, 1, 3),
        srv_count=_counts(rng, n, 1, 3),
        serror_rate=np.zeros(n),
        rerror_rate=_rate(rng, n, 2, 8),
        same_srv_rate=np.ones(n),
        dst_host_count=_counts(rng, n, 1, 30),
        dst_host_srv_count=_counts(rng, n, 1, 30),
    )


def _ipsweep(rng, n):
    return dict(
        duration=np.zeros(n),
        protocol_type=np.full(n, "icmp", dtype=object),
        service=_pick(rng, SERVICES, n, {"eco_i": 0.9, "ecr_i": 0.1}),
        flag=np.full(n, "SF", dtype=object),
        src_bytes=_counts(rng, n, 8, 18),
        dst_bytes=np.zeros(n, np.int64),
        logged_in=np.zeros(n, np.int64),
        count=_counts(rng, n, 1, 2),
        srv_count=_counts(rng, n, 1, 40),
        serror_rate=np.zeros(n),
        rerror_rate=np.zeros(n),
        same_srv_rate=np.ones(n),
        dst_host_count=_counts(rng, n, 1, 100),
        dst_host_srv_count=_counts(rng, n, 1, 10),
    )


# Attacks only the hold-out file has.
def _mailbomb(rng, n):  # looks like ordinary mail: mostly missed
    base = _normal(rng, n)
    base.update(
        protocol_type=np.full(n, "tcp", dtype=object),
        service=np.full(n, "smtp", dtype=object),
        flag=np.full(n, "SF", dtype=object),
        src_bytes=_counts(rng, n, 2500, 2700),
        dst_bytes=_counts(rng, n, 250, 330),
        logged_in=np.ones(n, np.int64),
        count=_counts(rng, n, 1, 60),
    )
    return base


def _processtable(rng, n):  # holds connections open: long, empty
    return dict(
        duration=np.round(rng.uniform(1500, 3000, n), 1),
        protocol_type=np.full(n, "tcp", dtype=object),
        service=_pick(rng, SERVICES, n, {"finger": 0.5, "http": 0.3}, tail=0.2),
        flag=_pick(rng, FLAGS, n, {"SF": 0.6, "S0": 0.2, "RSTO": 0.2}),
        src_bytes=np.zeros(n, np.int64),
        dst_bytes=np.zeros(n, np.int64),
        logged_in=np.zeros(n, np.int64),
        count=_counts(rng, n, 1, 10),
        srv_count=_counts(rng, n, 1, 10),
        serror_rate=_rate(rng, n, 2, 5),
        rerror_rate=_rate(rng, n, 1, 10),
        same_srv_rate=_rate(rng, n, 5, 2),
        dst_host_count=_counts(rng, n, 1, 255),
        dst_host_srv_count=_counts(rng, n, 1, 100),
    )


def _apache2(rng, n):
    return dict(
        duration=np.zeros(n),
        protocol_type=np.full(n, "tcp", dtype=object),
        service=np.full(n, "http", dtype=object),
        flag=_pick(rng, FLAGS, n, {"RSTR": 0.4, "S3": 0.3, "SF": 0.3}),
        src_bytes=_lognormal(rng, n, 4.0, 1.0),
        dst_bytes=np.zeros(n, np.int64),
        logged_in=np.zeros(n, np.int64),
        count=_counts(rng, n, 50, 300),
        srv_count=_counts(rng, n, 50, 300),
        serror_rate=_rate(rng, n, 3, 3),
        rerror_rate=_rate(rng, n, 3, 3),
        same_srv_rate=np.ones(n),
        dst_host_count=_counts(rng, n, 100, 255),
        dst_host_srv_count=_counts(rng, n, 100, 255),
    )


def _snmpguess(rng, n):  # small UDP requests to 'private': looks normal
    base = _normal(rng, n)
    base.update(
        protocol_type=np.full(n, "udp", dtype=object),
        service=np.full(n, "private", dtype=object),
        flag=np.full(n, "SF", dtype=object),
        src_bytes=_counts(rng, n, 30, 45),
        dst_bytes=np.zeros(n, np.int64),
        logged_in=np.zeros(n, np.int64),
    )
    return base


GENERATORS: dict[str, Callable[[np.random.Generator, int], dict]] = {
    "normal": _normal,
    "neptune": _neptune,
    "smurf": _smurf,
    "portsweep": _portsweep,
    "satan": _satan,
    "back": _back,
    "guess_passwd": _guess_passwd,
    "ipsweep": _ipsweep,
    "mailbomb": _mailbomb,
    "processtable": _processtable,
    "apache2": _apache2,
    "snmpguess": _snmpguess,
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

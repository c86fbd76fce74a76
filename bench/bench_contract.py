"""The input contract's cost per JSON request: msgspec fast decode vs the contract path.

Both apply the same rules (serving/inputs.py); the fast decode only accepts well-formed rows
and the contract path (json.loads + pandera checks) takes everything else. Prints the median
time per request for 1, 10 and 1000-row bodies, with and without null cells.

    .venv/bin/python bench/bench_contract.py
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

from netsec_tasks.contract import Contract
from netsec_tasks.dataset_schema import load_schema
from netsec_tasks.sample import make_sample
from serving.inputs import fast_json_input, json_input

REPO = Path(__file__).resolve().parent.parent


def _median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    contract = Contract(load_schema(REPO / "config" / "schema" / "phishing.yaml"))
    model = SimpleNamespace(features=tuple(contract.features), numeric_only=True)
    print(f"{'rows':>6} {'nulls':>6} {'fast decode ms':>15} {'contract path ms':>17} {'ratio':>6}")
    for n in (1, 10, 1000):
        records = make_sample(n, seed=1).drop(columns="Result").to_dict(orient="records")
        for nulls in (False, True):
            recs = [dict(r) for r in records]
            if nulls:
                for r in recs:
                    r["SFH"] = None
            body = json.dumps({"records": recs}).encode()
            assert fast_json_input(body, contract, model, 100_000) is not None
            repeat = 300 if n < 1000 else 30
            fast = _median_ms(lambda body=body: fast_json_input(body, contract, model, 100_000), repeat)
            slow = _median_ms(lambda body=body: json_input(body, contract, model, 100_000), repeat)
            print(f"{n:>6} {str(nulls):>6} {fast:>15.3f} {slow:>17.3f} {slow / fast:>5.0f}x")


if __name__ == "__main__":
    main()

"""Write this example's data from rollguard's demo (River's Agrawal loan generator):
train.csv and holdout.csv (2,000 past applications each, label `approved`) and recent.jsonl
(2,000 requests as the service sent them to rollguard.requests: the production window).

    python examples/preflight/make_data.py
"""

import csv
import itertools
import json
import time
from pathlib import Path

from rollguard.demo.data import holdout_rows, traffic, training_rows

HERE = Path(__file__).resolve().parent
CODES = ("elevel", "car", "zipcode")  # category codes: written as integers


def features(x: dict) -> dict:
    return {k: int(v) if k in CODES else v for k, v in x.items()}


def write_csv(name: str, rows: list) -> None:
    with (HERE / name).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0][0], "approved"])
        writer.writeheader()
        for x, y in rows:
            writer.writerow({**features(x), "approved": y})


if __name__ == "__main__":
    write_csv("train.csv", training_rows(seed=7))
    write_csv("holdout.csv", holdout_rows(seed=7))
    now = time.time()
    with (HERE / "recent.jsonl").open("w") as handle:
        for app in itertools.islice(traffic(seed=8), 2000):
            handle.write(json.dumps({"request_id": app.request_id, "experiment": "loan-v2",
                                     "ts": round(now - 600 + 0.3 * app.index, 3),
                                     "features": features(app.features)}) + "\n")
    print(f"wrote train.csv, holdout.csv and recent.jsonl in {HERE}")

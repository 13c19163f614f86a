#!/usr/bin/env python3
"""Baseline: the dense pandas + scikit-learn pipeline a data scientist writes.

    bench/dense_sklearn.py EVENTS.csv RECSYS_NEIGHBORS.csv K OUT.kv

EVENTS.csv is a COPY of the raw events (user_id, product_id, event_type);
RECSYS_NEIGHBORS.csv the active model's lists (item, rank, neighbour, sim).

The pipeline: weight each event by its type (the weights recsys uses, passed
in WEIGHTS as type=weight,...), pivot_table to a dense user x item matrix
(sum, fill 0), sklearn's cosine_similarity over the item columns, zero the
diagonal, and per item a stable argsort for the top K with sim > 0.
cosine_similarity normalises first, so its sims differ from recsys's in the
last bits; the check allows 1e-9 and reports near-tie reorderings apart.

Writes load_s (CSV to DataFrame), compute_s (pivot, similarities, top K),
peak_mb (RSS growth during the computation), dense_mb (the pivot's size),
and the agreement counts.
"""
import os
import sys
import time

import numpy as np
import pandas as pd
import sklearn
from sklearn.metrics.pairwise import cosine_similarity

from py_common import compare, load_recsys_neighbors, peak_growth_mb, reset_peak, write_kv


def main():
    events_csv, recsys_csv, K, out_kv = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    weights = {k: float(v) for k, v in (p.split("=") for p in os.environ["WEIGHTS"].split(","))}

    t0 = time.perf_counter()
    ev = pd.read_csv(events_csv, header=None, names=["user_id", "product_id", "event_type"])
    load_s = time.perf_counter() - t0

    rss0 = reset_peak()
    t0 = time.perf_counter()
    ev["weight"] = ev["event_type"].map(weights).fillna(0.0)
    ev = ev[ev["weight"] > 0]
    m = ev.pivot_table(index="user_id", columns="product_id", values="weight",
                       aggfunc="sum", fill_value=0.0)
    dense_mb = m.values.nbytes / 1048576
    S = cosine_similarity(m.values.T)           # items x items, dense
    np.fill_diagonal(S, 0.0)
    ids = m.columns.to_numpy()
    lists = {}
    for i in range(S.shape[0]):
        row = S[i]
        top = np.argsort(-row, kind="stable")[:K]   # ties: lower column = lower id first
        top = top[row[top] > 0]
        if len(top):
            lists[int(ids[i])] = (ids[top], row[top])
    compute_s = time.perf_counter() - t0
    peak = peak_growth_mb(rss0)

    theirs = load_recsys_neighbors(recsys_csv)
    n, strict, tolerant, max_diff = compare(lists, theirs)
    write_kv(out_kv, load_s=f"{load_s:.3f}", compute_s=f"{compute_s:.3f}", peak_mb=f"{peak:.0f}",
             dense_mb=f"{dense_mb:.0f}", items=n, strict=strict, tolerant=tolerant,
             max_diff=f"{max_diff:.3g}", version=f"pandas {pd.__version__}, scikit-learn {sklearn.__version__}")


if __name__ == "__main__":
    main()

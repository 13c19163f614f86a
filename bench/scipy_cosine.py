#!/usr/bin/env python3
"""Baseline: recsys's model computed with scipy.sparse, and checked against it.

    bench/scipy_cosine.py MATRIX.csv RECSYS_NEIGHBORS.csv K OUT.kv

MATRIX.csv is a COPY of recsys_user_item_matrix (user_id, product_id, weight);
RECSYS_NEIGHBORS.csv the active model's lists (item, rank, neighbour, sim).

The computation is what one would write with scipy: the sparse user x item
matrix W, column norms |w_i| = sqrt(sum_u w_ui^2), the dot products
D = W^T W computed in blocks of items (so that no block holds more than
~BLOCK_NNZ products), sim(i, j) = D_ij / (|w_i| |w_j|) for j != i, kept when
> 0, and per item the top K by sim descending, then id ascending.  That is
recsys's definition (docs/sql.md), written in the same floating-point order,
so with the integer-valued default weights the sims must match to the last
bit; the check allows 1e-9.

Writes load_s (reading the CSV into arrays), compute_s (everything from the
arrays to the top-K lists), peak_mb (RSS growth during the computation),
items, strict/tolerant agreement counts and the largest sim difference.
"""
import sys
import time

import numpy as np
import scipy
import scipy.sparse as sp

from py_common import compare, load_recsys_neighbors, peak_growth_mb, read_matrix_csv, reset_peak, write_kv

BLOCK_NNZ = 20_000_000


def topk_block(D, rows_item, norm, K):
    """D: csr, one row per item of the block (its dots with every item).
    Returns {item index: (neighbour indices, sims)} for the block."""
    D.sort_indices()
    counts = np.diff(D.indptr)
    row = np.repeat(np.arange(D.shape[0]), counts)
    col = D.indices.astype(np.int64)
    me = rows_item[row]
    sim = D.data / (norm[me] * norm[col])
    keep = (col != me) & (sim > 0) & np.isfinite(sim)
    row, col, sim = row[keep], col[keep], sim[keep]
    # rows ascending, then sim descending, then neighbour ascending
    order = np.lexsort((col, -sim, row))
    row, col, sim = row[order], col[order], sim[order]
    starts = np.searchsorted(row, np.arange(D.shape[0] + 1))
    out = {}
    for r in range(D.shape[0]):
        a, b = starts[r], min(starts[r + 1], starts[r] + K) if K > 0 else starts[r + 1]
        if b > a:
            out[int(rows_item[r])] = (col[a:b], sim[a:b])
    return out


def main():
    matrix_csv, recsys_csv, K, out_kv = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

    t0 = time.perf_counter()
    users, items, weights = read_matrix_csv(matrix_csv)
    load_s = time.perf_counter() - t0

    rss0 = reset_peak()
    t0 = time.perf_counter()
    item_ids, item_ix = np.unique(items, return_inverse=True)   # ascending ids
    _, user_ix = np.unique(users, return_inverse=True)
    n_items, n_users = len(item_ids), int(user_ix.max()) + 1 if len(user_ix) else 0
    W = sp.csr_matrix((weights, (user_ix, item_ix)), shape=(n_users, n_items))
    W.sum_duplicates()
    WT = W.T.tocsr()                                            # items x users
    norm = np.sqrt(np.asarray(W.multiply(W).sum(axis=0)).ravel())
    # Blocks of items whose multiply-adds (sum over the item's users of their
    # degrees) stay under BLOCK_NNZ: that bounds each block's product.
    deg = np.diff(W.indptr)
    work = np.asarray(WT @ deg.astype(np.float64)).ravel()
    lists = {}
    start = 0
    while start < n_items:
        end, acc = start, 0.0
        while end < n_items and (end == start or acc + work[end] <= BLOCK_NNZ):
            acc += work[end]
            end += 1
        block = np.arange(start, end)
        D = (WT[block] @ W).tocsr()                             # block x items
        lists.update(topk_block(D, block, norm, K))
        start = end
    # back to product ids
    lists = {int(item_ids[i]): (item_ids[c], s) for i, (c, s) in lists.items()}
    compute_s = time.perf_counter() - t0
    peak = peak_growth_mb(rss0)

    theirs = load_recsys_neighbors(recsys_csv)
    n, strict, tolerant, max_diff = compare(lists, theirs)
    write_kv(out_kv, load_s=f"{load_s:.3f}", compute_s=f"{compute_s:.3f}", peak_mb=f"{peak:.0f}",
             items=n, strict=strict, tolerant=tolerant, max_diff=f"{max_diff:.3g}",
             pairs=sum(len(c) for c, _ in lists.values()), version=scipy.__version__)


if __name__ == "__main__":
    main()

"""Helpers shared by the benchmark's Python baselines (bench/run.sh calls them).

Nothing here times anything; each baseline times its own phases.
"""
import os

import numpy as np


def rss_kb(field):
    """VmRSS / VmHWM of this process, in kB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field + " not in /proc/self/status")


def reset_peak():
    """Resets VmHWM to the current RSS (Linux >= 4.0); returns the RSS in kB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return rss_kb("VmRSS")


def peak_growth_mb(rss_before_kb):
    return (rss_kb("VmHWM") - rss_before_kb) / 1024.0


def load_recsys_neighbors(path):
    """recsys's stored lists, exported as CSV rows (item, rank, neighbour, sim)
    sorted by item and rank: {item: (ids array, sims array)}."""
    import pandas as pd
    out = {}
    if os.path.getsize(path) == 0:
        return out
    raw = pd.read_csv(path, header=None, dtype=np.float64, engine="c", float_precision="round_trip").to_numpy()
    if raw.shape[0] == 0:
        return out
    items = raw[:, 0].astype(np.int64)
    cuts = np.flatnonzero(np.diff(items)) + 1
    for seg in np.split(np.arange(raw.shape[0]), cuts):
        out[int(items[seg[0]])] = (raw[seg, 2].astype(np.int64), raw[seg, 3])
    return out


def compare(mine, theirs, tol=1e-9):
    """Compares neighbour lists {item: (ids, sims)} against recsys's.

    strict:   items whose lists have the same ids in the same order and sims
              within tol, position by position (an item absent from both counts
              as agreeing only if it is in neither: it is not counted);
    tolerant: sims within tol position by position, and every position where
              the ids differ lies in a near-tie (another position, or the list's
              end, within 1e-12 of its sim): a different but equally valid
              order of items whose similarities are equal up to rounding.
    Returns (items compared, strict agreements, tolerant agreements, max |sim diff|
    over positions with the same id)."""
    items = set(mine) | set(theirs)
    strict = tolerant = 0
    max_diff = 0.0
    empty = (np.zeros(0, np.int64), np.zeros(0))
    for it in items:
        a_ids, a_sims = mine.get(it, empty)
        b_ids, b_sims = theirs.get(it, empty)
        if len(a_ids) != len(b_ids):
            continue
        same = a_ids == b_ids
        if same.any():
            max_diff = max(max_diff, float(np.max(np.abs(a_sims[same] - b_sims[same]))))
        close = bool(np.all(np.abs(a_sims - b_sims) <= tol))
        if close and same.all():
            strict += 1
            tolerant += 1
            continue
        if close:
            ok = True
            for k in np.flatnonzero(~same):
                s = b_sims[k]
                near = np.abs(b_sims - s) <= 1e-12
                near[k] = False
                if not near.any() and k != len(b_ids) - 1:
                    ok = False
                    break
            tolerant += ok
    return len(items), strict, tolerant, max_diff


def write_kv(path, **kv):
    """Appends key=value lines (the baselines' results) to path."""
    with open(path, "a") as f:
        for k, v in kv.items():
            f.write(f"{k}={v}\n")


def read_matrix_csv(path):
    """The exported recsys_user_item_matrix: user_id, product_id, weight."""
    import pandas as pd
    df = pd.read_csv(path, header=None, names=["u", "i", "w"],
                     dtype={"u": np.int64, "i": np.int64, "w": np.float64}, engine="c", float_precision="round_trip")
    return df["u"].to_numpy(), df["i"].to_numpy(), df["w"].to_numpy()

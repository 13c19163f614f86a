"""rss_peak.py PID STOP OUT: the peak of PID's RssAnon (kB), sampled every
0.5 ms until the file STOP exists, written to OUT; OUT.ready is created
after the first sample (the caller waits for it before it starts training:
the interpreter takes tens of ms to start).

bench/run.sh and bench/bench_memory.sh run it beside one recsys_train() whose
time is not taken (its ~10% of a core would slow the call): a training's
private memory can peak for a millisecond or two (the read's cell table
while it doubles holds the old table and the new), which a 20 ms shell loop
misses.
"""
import os
import sys
import time


def main():
    pid, stop, out = sys.argv[1], sys.argv[2], sys.argv[3]
    peak = 0
    path = "/proc/%s/status" % pid
    first = True
    while not os.path.exists(stop):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        peak = max(peak, int(line.split()[1]))
                        break
        except OSError:
            break  # the backend is gone
        if first:
            open(out + ".ready", "w").close()
            first = False
        time.sleep(0.0005)
    with open(out, "w") as f:
        f.write("%d\n" % peak)


if __name__ == "__main__":
    main()

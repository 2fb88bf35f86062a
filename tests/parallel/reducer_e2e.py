#!/usr/bin/env python3
"""The worker end to end with the bucketed reducer under a real mpiexec -np 2.

For distributed.bucket_mb 25, 1, 0 and 0.1 (with accumulate_steps 2): the run succeeds, replicas end
bit-identical, result.json carries the reducer's stats (bucket layout, exposed ms, straggler), and
the bucket count follows the setting. fp16 compression over the mpi backend fails with a ConfigError
naming distributed.compression.
usage: reducer_e2e.py buckets   (RX_SOURCE_DIR / RX_BINARY_DIR and PYTHONPATH=tests/python set by CTest)
"""
import os
import sys

from rxtest import check, main, run_record, run_worker

# Small on purpose: these checks read the reducer's stats and the replicas' checksums, not accuracy.
QUICK = ["data.max_train_samples=512", "data.max_test_samples=128", "training.epochs=2",
         "training.log_every_steps=2", "training.threads=1"]


def run(out, sets):
    rc, log, _ = run_worker(2, out, QUICK + sets, 400)
    return rc, log


def buckets(tmp):
    counts = {}
    for mb, first, acc in ((25, 1, 1), (1, 1, 1), (0, 1, 1), (0.1, 0.02, 2)):
        out = os.path.join(tmp, f"b{mb}_a{acc}")
        rc, log = run(out, [f"distributed.bucket_mb={mb}", f"distributed.first_bucket_mb={first}",
                            f"training.accumulate_steps={acc}"])
        check(rc == 0, f"bucket_mb={mb} accumulate={acc}: worker exited {rc}", log)
        r = run_record(out)
        sums = [x["param_checksum"] for x in r["ranks"]]
        check(len(sums) == 2 and sums[0] == sums[1], f"bucket_mb={mb}: replicas differ {sums}")
        red = r.get("reducer")
        check(red is not None, "result.json lacks the reducer stats")
        check(red["bucket_mb"] == mb and red["steps"] > 0, f"stats: {red}")
        check(len(red["per_bucket"]) == red["buckets"]["count"], f"per-bucket stats: {red}")
        # The exposed time covers every bucket's wait, and is a part of the optimizer step: below the
        # mean step time (per micro-batch, hence * accumulate) that each rank measured.
        exposed = red["mean_exposed_ms"]
        waits = sum(b["mean_exposed_ms"] for b in red["per_bucket"])
        check(exposed >= waits * (1 - 1e-9), f"exposed {exposed} ms < the bucket waits' sum {waits} ms")
        step_ms = min(rk["step_time_ms"]["total"] for rk in r["ranks"]) * acc
        check(exposed < step_ms, f"exposed {exposed} ms >= the step time {step_ms} ms")
        st = red["straggler"]
        check(st is not None and st["rank"] in (0, 1) and len(st["lag_ms_by_rank"]) == 2, f"straggler: {st}")
        counts[(mb, acc)] = red["buckets"]["count"]
        print(f"bucket_mb={mb} accumulate={acc}: {red['buckets']['count']} buckets, "
              f"{red['mean_exposed_ms']:.2f} ms exposed/step, straggler {st}, "
              f"{r['total_images_per_sec']:.0f} images/s")
    check(counts[(25, 1)] == 1 and counts[(1, 1)] == 1, f"the 0.6 MB model fits one bucket: {counts}")
    check(counts[(0, 1)] > counts[(0.1, 2)] > 1, f"bucket_mb 0: one bucket per parameter: {counts}")
    rc, log = run(os.path.join(tmp, "fp16"), ["distributed.compression=fp16"])
    check(rc != 0 and "distributed.compression" in log, "fp16 over mpi must be a config error", log)


if __name__ == "__main__":
    sys.exit(main({"buckets": buckets}, __doc__))

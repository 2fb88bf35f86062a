"""The worker's data order, augmentation draws and learning rate, ported to Python so that a PyTorch
peer (bench/accuracy/ddp_fashion.py) trains on exactly the batches the worker trains on.

Each function names the C++ it ports; keep them in step when that code changes:
  common/util/rng.h          splitmix64, mix_seed, Rng (xoshiro256**: next, below, uniform, coin)
  common/data/shard_plan.cpp shard_length, shard_indices (the "global" shard mode, the default)
  common/data/augment.cpp    Augmenter::draw (crop shift, flip; random erasing is not ported), the
                             uint8 -> float normalisation table
  worker/lr_schedule.cpp     learning_rate (warm-up from lr/10, then constant / multistep / cosine)

C++ does its arithmetic in uint64_t, i.e. modulo 2**64; Python integers do not wrap, so every product,
sum and left shift is masked with MASK64. Plain Python is fast enough here: an epoch's shuffle of 60k
indices takes ~0.1 s and its 30k flip draws per rank ~0.2 s, against minutes of training.

`self_check()` compares this port with values printed by the C++ itself (GOLDEN below).
"""
import hashlib
import math

import numpy as np

MASK64 = (1 << 64) - 1


# ---- common/util/rng.h --------------------------------------------------------------------------------

def splitmix64(state):
    """One SplitMix64 step: returns (new_state, output). C++ updates `state` by reference."""
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def mix_seed(parts):
    """Mixes several 64-bit values (seed, epoch, index, ...) into one seed."""
    state, out = 0x6A09E667F3BCC909, 0
    for p in parts:
        state ^= p & MASK64  # C++ converts each part to uint64_t (negative values wrap)
        state, out = splitmix64(state)
    return out


def _rotl(x, k):
    return ((x << k) & MASK64) | (x >> (64 - k))


class Rng:
    """xoshiro256** seeded through SplitMix64, as rx::Rng."""

    def __init__(self, seed):
        st = seed & MASK64
        self.s = []
        for _ in range(4):
            st, w = splitmix64(st)
            self.s.append(w)

    def next(self):
        s = self.s
        result = (_rotl((s[1] * 5) & MASK64, 7) * 9) & MASK64
        t = (s[1] << 17) & MASK64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 45)
        return result

    def below(self, bound):
        """Uniform in [0, bound) by rejection sampling (no modulo bias), bound > 0."""
        limit = MASK64 - (MASK64 % bound)
        while True:
            x = self.next()
            if x < limit:
                return x % bound

    def uniform(self):
        """Uniform in [0, 1) with 53 random bits."""
        return (self.next() >> 11) * 2.0 ** -53

    def coin(self):
        return (self.next() >> 63) != 0


def portable_shuffle(seq, rng):
    """Fisher-Yates in place, from the back, as rx::portable_shuffle."""
    for i in range(len(seq), 1, -1):
        j = rng.below(i)
        seq[i - 1], seq[j] = seq[j], seq[i - 1]


# ---- common/data/shard_plan.cpp ("global" mode) ----------------------------------------------------------

def shard_length(n, world):
    """Samples per rank per epoch: ceil(N / w)."""
    return (n + world - 1) // world


def shard_indices(n, world, rank, epoch, seed, shuffle=True, start=0):
    """DistributedSampler semantics, as the worker draws them: one permutation of range(n) seeded by
    mix_seed({seed + epoch, 0x61B}), padded by repeating its head so every rank gets the same count;
    rank r takes positions start + r, start + r + w, ... of the padded permutation."""
    if n <= 0 or world <= 0 or not 0 <= rank < world:
        raise ValueError(f"shard_indices: bad n={n} world={world} rank={rank}")
    rest = (max(0, n - start) + world - 1) // world
    perm = list(range(n))
    if shuffle:
        portable_shuffle(perm, Rng(mix_seed([(seed + epoch) & MASK64, 0x61B])))
    return [perm[(start + rank + i * world) % n] for i in range(rest)]


# ---- common/data/augment.cpp ------------------------------------------------------------------------------

def draw(seed, epoch, sample_index, crop_padding=0, flip=True):
    """Augmenter::draw without random erasing: (shift_y, shift_x, flip) for one sample, from
    Rng(mix_seed({seed, epoch, sample_index})) in the fixed order crop shift (y, x), then flip, each only
    when enabled. The loader passes training.seed, the epoch (0-based) and the sample's dataset index."""
    rng = Rng(mix_seed([seed, epoch, sample_index]))
    shift_y = shift_x = 0
    if crop_padding > 0:
        span = 2 * crop_padding + 1
        shift_y = rng.below(span) - crop_padding
        shift_x = rng.below(span) - crop_padding
    return shift_y, shift_x, (rng.coin() if flip else False)


def normalise_table(mean, std):
    """The loader's uint8 -> float table for one channel: float((v / 255.0 - mean) / std) in double,
    with mean and std first rounded to float (AugmentOptions holds them as std::vector<float>)."""
    m, s = float(np.float32(mean)), float(np.float32(std))
    return np.array([(v / 255.0 - m) / s for v in range(256)], dtype=np.float64).astype(np.float32)


# ---- worker/lr_schedule.cpp ---------------------------------------------------------------------------------

def learning_rate(training, world_size, progress):
    """Learning rate at `progress` epochs (epoch + step / steps_per_epoch) from the job config's resolved
    `training` section (a dict with the worker's defaults filled in)."""
    s = training["lr_schedule"]
    base = training["optimizer"]["lr"] * (world_size if s["scale_with_world"] else 1)
    epochs = training["epochs"]
    warmup = min(s["warmup_epochs"], epochs)
    if warmup > 0 and progress < warmup:
        return base * (0.1 + 0.9 * progress / warmup)
    if s["name"] == "multistep":
        lr = base
        for m in s["milestones"]:
            lr *= s["gamma"] if progress >= m * epochs else 1.0
        return lr
    if s["name"] == "cosine":
        span = max(1e-9, epochs - warmup)
        x = min(1.0, max(0.0, (progress - warmup) / span))
        return base * 0.5 * (1.0 + math.cos(math.pi * x))
    return base  # constant


# ---- check against values printed by the C++ ------------------------------------------------------------------

# Printed by a program linked against the worker's code (rx::Rng, rx::data::shard_indices,
# rx::data::Augmenter::draw; bench/accuracy/README.md "Order check"): N = 60000 (Fashion-MNIST train),
# world 2, training.seed 1. "*_sha256" is over the whole list (int64 little-endian, or one '0'/'1' per
# flip), so the check covers every position, not only the printed head.
GOLDEN = {
    "rng_seed1_next4": [12966619160104079557, 9600361134598540522, 10590380919521690900, 7218738570589545383],
    "mix_seed_1_0_0": 11176358302719344501,
    "shard_e0_r0_head8": [56182, 17965, 31894, 45868, 11328, 58351, 8341, 18924],
    "shard_e0_r1_head8": [11459, 15080, 57433, 48497, 34133, 8468, 59623, 24573],
    "shard_e1_r0_head8": [6846, 8456, 2633, 54287, 15111, 24982, 33555, 15414],
    "shard_e0_r0_sha256": "d6e0ec0ec07547ef1a551a31e243c59cfd8878c39d20f5f334a78cb58f596382",
    "shard_e0_r1_sha256": "b16467de0f4bb345475a3709afa083e7352a3cce867e8bcaac59395603cd9af8",
    "shard_e4_r1_sha256": "43cad50da9de0a86159a44ee3c142920792dc2d8b1b0a6e224cd2919dc2932d9",
    # N=10, w=3 (padded with the permutation's head), rank 2, epoch 5, seed 7.
    "shard_n10_w3_r2_e5_seed7": [5, 4, 7, 8],
    "flips_seed1_e0_idx0_15": [0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 1],
    "flips_e0_r0_sha256": "816ba4d009954cb1c357d7426df386c406f8ad8637fd24cf3451314e412619ab",
    "flips_e3_r1_sha256": "319353ec4043116835a80d98358c7e065d5daae08d0a64fff52761e1342d4daf",
    # crop_padding 4: (shift_y, shift_x, flip) of samples 0..5, epoch 2 (the flip is then the third draw).
    "crop4_seed1_e2_idx0_5": [(-2, -4, 0), (3, 1, 1), (-1, 2, 1), (3, -3, 1), (4, 4, 1), (0, 0, 1)],
    # worker::learning_rate, world 2, lr 0.2, 5 epochs: cosine with warmup 0.1 at steps 0, 1, 23, 46, 47,
    # 468, 569, 2344 of 469 per epoch; then multistep [0.5, 0.75] with scale_with_world at epochs 0, 0.05,
    # 2.4, 2.5, 3.75, 4.9. Exact (repr of the C++ double).
    "lr_cosine": [0.020000000000000004, 0.023837953091684436, 0.10827292110874201, 0.196545842217484,
                  0.19999999906560201, 0.183883308911543, 0.17559245222429645, 9.343978631948247e-08],
    "lr_multistep_scaled": [0.040000000000000008, 0.22000000000000003, 0.40000000000000002,
                            0.040000000000000008, 0.004000000000000001, 0.004000000000000001],
}

_LR_TRAINING = {"epochs": 5, "optimizer": {"lr": 0.2},
                "lr_schedule": {"name": "cosine", "warmup_epochs": 0.1, "milestones": [], "gamma": 0.1,
                                "scale_with_world": False}}


def _sha256_indices(idx):
    return hashlib.sha256(np.asarray(idx, dtype="<i8").tobytes()).hexdigest()


def _sha256_flips(seed, epoch, idx):
    return hashlib.sha256("".join("1" if draw(seed, epoch, i)[2] else "0" for i in idx).encode()).hexdigest()


def self_check(verbose=True):
    """Recomputes every GOLDEN value with this port; prints each (when verbose) and returns True when
    all match the C++."""
    r = Rng(1)
    multistep = {**_LR_TRAINING, "lr_schedule": {**_LR_TRAINING["lr_schedule"], "name": "multistep",
                                                 "milestones": [0.5, 0.75], "scale_with_world": True}}
    got = {
        "rng_seed1_next4": [r.next() for _ in range(4)],
        "mix_seed_1_0_0": mix_seed([1, 0, 0]),
        "shard_e0_r0_head8": shard_indices(60000, 2, 0, 0, 1)[:8],
        "shard_e0_r1_head8": shard_indices(60000, 2, 1, 0, 1)[:8],
        "shard_e1_r0_head8": shard_indices(60000, 2, 0, 1, 1)[:8],
        "shard_e0_r0_sha256": _sha256_indices(shard_indices(60000, 2, 0, 0, 1)),
        "shard_e0_r1_sha256": _sha256_indices(shard_indices(60000, 2, 1, 0, 1)),
        "shard_e4_r1_sha256": _sha256_indices(shard_indices(60000, 2, 1, 4, 1)),
        "shard_n10_w3_r2_e5_seed7": shard_indices(10, 3, 2, 5, 7),
        "flips_seed1_e0_idx0_15": [int(draw(1, 0, i)[2]) for i in range(16)],
        "flips_e0_r0_sha256": _sha256_flips(1, 0, shard_indices(60000, 2, 0, 0, 1)),
        "flips_e3_r1_sha256": _sha256_flips(1, 3, shard_indices(60000, 2, 1, 3, 1)),
        "crop4_seed1_e2_idx0_5": [(y, x, int(f)) for y, x, f in (draw(1, 2, i, crop_padding=4) for i in range(6))],
        "lr_cosine": [learning_rate(_LR_TRAINING, 2, step / 469) for step in (0, 1, 23, 46, 47, 468, 569, 2344)],
        "lr_multistep_scaled": [learning_rate(multistep, 2, p) for p in (0.0, 0.05, 2.4, 2.5, 3.75, 4.9)],
    }
    ok = True
    for key, want in GOLDEN.items():
        match = got[key] == want
        ok &= match
        if verbose:
            print(f"  {key}: {got[key]}  {'== C++' if match else '!= C++ ' + str(want)}", flush=True)
    return ok

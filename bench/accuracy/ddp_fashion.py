#!/usr/bin/env python3
"""PyTorch DDP peer of resnext_worker for the time-to-accuracy benchmark (bench/accuracy/README.md).

It trains what the worker trains for the same job config: the same network (bench/python/resnext_torch.py,
initialised like common/model/resnext.cpp from torch.manual_seed(training.seed)), on the same batches
(the worker's shard order and flip draws, ported in bench/python/rx_order.py), with the same learning
rate at every step, loss, gradient averaging and SGD, and evaluates on the full test set after each
epoch as the worker does (rank 0's BatchNorm statistics, each rank half the test set).

    PYTHONPATH=bench/python /usr/bin/python3 -m torch.distributed.run --nproc_per_node 2 \\
        --redirects 1 --tee 1 bench/accuracy/ddp_fashion.py --config configs/fashion_mnist_fast.json

Rank 0 prints, flushed, one line per evaluated epoch:
    EPOCH 1/5 train_loss=0.5123 train_acc=0.8120 test_loss=0.3561 test_acc=0.8712 elapsed=93.4
(elapsed: seconds since this process started). `--set key=value` overrides config keys as the worker's
`--set` does (e.g. training.max_steps_per_epoch=30 for a smoke run).

`--self-check` (no launcher needed) compares the port with values printed by the C++ (rx_order.GOLDEN,
and GOLDEN_BATCHES below for real Fashion-MNIST batches and the initial model) and exits 1 on a mismatch.

Only what the Fashion-MNIST recipes use is supported; any other setting that would change what is
trained (random crop, erasing, EMA, gradient accumulation, ...) stops the run with a message naming the
config key, instead of silently training something else.
"""
import argparse
import copy
import gzip
import hashlib
import json
import math
import os
import sys
import time

T_START = time.monotonic()  # before the torch import: elapsed covers the whole process

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# bench/python, the benches' shared library folder, so that a run by hand needs no PYTHONPATH.
sys.path.insert(0, os.path.join(REPO, "bench", "python"))

import rx_order  # noqa: E402
from resnext_torch import Bottleneck, CifarResNeXt  # noqa: E402


class ConfigError(Exception):
    """A config key this peer cannot honour; the message starts with the dotted key."""


# ---- the job config --------------------------------------------------------------------------------------

# The worker's defaults (common/config/schema.cpp) for every key of the sections this peer reads. Keys
# of other sections (distributed, output, checkpoint, report, name) do not change what is trained and are
# ignored; an unknown key in model/data/training is an error, as it is for the worker. model.fused_bn_relu
# is accepted and has no effect here: it changes how the worker computes BN + ReLU (float rounding), not
# what it trains, and the peer runs PyTorch's own modules either way.
DEFAULTS = {
    "model": {"preset": None, "depth": None, "cardinality": None, "base_width": None, "bottleneck_width": 0,
              "stem_channels": None, "base_planes": None, "num_classes": 10, "zero_init_residual": False,
              "pretrained": "", "replace_head": False, "fused_bn_relu": False},
    "data": {"format": None, "path": None, "source": "shared", "shard_mode": "global",
             "max_train_samples": 0, "max_test_samples": 0, "num_workers": 1, "prefetch": 4,
             "channels_last": False,
             "augment": {"crop_padding": 4, "flip": True, "mean": [0.4914, 0.4822, 0.4465],
                         "std": [0.2470, 0.2435, 0.2616], "resize": 0, "pad_to": 0, "replicate_channels": 0,
                         "erasing": 0, "erasing_scale": [0.02, 0.4], "erasing_ratio": [0.3, 3.3]}},
    "training": {"epochs": 1, "batch_size": 64, "seed": 1, "max_steps_per_epoch": 0,
                 "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
                               "fused": True, "betas": [0.9, 0.999], "eps": 1e-8},
                 "lr_schedule": {"name": "multistep", "milestones": [], "gamma": 0.1, "warmup_epochs": 0,
                                 "scale_with_world": False},
                 "label_smoothing": 0.0, "ema_decay": 0, "accumulate_steps": 1, "eval_every_epochs": 1,
                 "log_every_steps": 20, "device": "auto", "precision": "fp32", "cudnn_benchmark": True,
                 "threads": 0},
}

# Settings that change what is trained and are not ported: key -> the only value accepted.
REQUIRED = {
    "model.pretrained": "",
    "model.bottleneck_width": 0,
    "data.format": "idx",
    "data.source": "shared",
    "data.shard_mode": "global",
    "data.augment.crop_padding": 0,
    "data.augment.resize": 0,
    "data.augment.pad_to": 0,
    "data.augment.replicate_channels": 0,
    "data.augment.erasing": 0,
    "training.optimizer.name": "sgd",
    "training.ema_decay": 0,
    "training.accumulate_steps": 1,
    "training.precision": "fp32",
}

# The worker's CIFAR presets (common/model/resnext_spec.cpp): depth, cardinality, base_width, stem
# channels, base planes. The ImageNet presets are not ported.
PRESETS = {
    "resnext29_8x64d": (29, 8, 64, 64, 64),
    "resnext29_16x64d": (29, 16, 64, 64, 64),
    "resnext29_4x16d": (29, 4, 16, 64, 64),
    "resnext11_4x16d": (11, 4, 16, 64, 64),
    "resnext20_tiny": (20, 4, 16, 32, 16),
}


def get(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _merge(defaults, user, prefix):
    """defaults updated with user, recursively; unknown keys are an error."""
    out = copy.deepcopy(defaults)
    for k, v in user.items():
        key = f"{prefix}{k}"
        if k not in defaults:
            raise ConfigError(f"{key}: unknown key (the worker's schema has no such key, or this peer "
                              f"does not know it)")
        out[k] = _merge(defaults[k], v, key + ".") if isinstance(defaults[k], dict) else v
    return out


def parse_override(kv):
    """`key=value` as the worker parses it (common/config/job_config.cpp): the value is JSON when it
    parses as JSON, else the plain string."""
    key, eq, value = kv.partition("=")
    if not eq or not key:
        raise ConfigError(f"--set: expected key=value, got {kv!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def load_config(path, overrides=()):
    """The config's model/data/training sections with the worker's defaults filled in and `overrides`
    (dotted key, value) applied. Raises ConfigError for anything this peer cannot reproduce."""
    with open(path) as f:
        user = json.load(f)
    for key, value in overrides:
        node, parts = user, key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    cfg = {section: _merge(DEFAULTS[section], user.get(section, {}), section + ".") for section in DEFAULTS}
    for key, want in REQUIRED.items():
        have = get(cfg, key)
        if have != want:
            raise ConfigError(f"{key}: {have!r} is not supported by the DDP peer (only {want!r})")
    if cfg["training"]["device"] == "cuda":
        raise ConfigError("training.device: \"cuda\" is not supported by the DDP peer (CPU only)")
    aug = cfg["data"]["augment"]
    for k in ("mean", "std"):
        if len(aug[k]) != 1:
            raise ConfigError(f"data.augment.{k}: needs 1 value for grey IDX images, got {len(aug[k])}")
    if cfg["data"]["path"] in (None, ""):
        raise ConfigError("data.path: required (the IDX files' folder)")
    sched = cfg["training"]["lr_schedule"]["name"]
    if sched not in ("constant", "multistep", "cosine"):
        raise ConfigError(f"training.lr_schedule.name: unknown schedule {sched!r}")
    return cfg


def build_model(model_cfg, seed):
    """The worker's network and initial weights. common/model/resnext.cpp builds every module (each
    Conv2d/Linear draws LibTorch's default kaiming-uniform init from the global generator, in
    construction order), then re-draws every conv kaiming_normal_(fan_out, relu) in module order, sets
    BN to weight 1 / bias 0, zeroes each block's bn3 weight when zero_init_residual, and keeps the
    Linear's default init. CifarResNeXt constructs in the same order and draws the same, so with the
    same seed and the same libtorch the initial weights are bit-identical (checked by --self-check)."""
    m = model_cfg
    if m["preset"] is not None:
        if any(m[k] is not None for k in ("depth", "cardinality", "base_width")):
            raise ConfigError("model.preset: give either model.preset or model.depth/cardinality/base_width")
        if m["preset"] not in PRESETS:
            raise ConfigError(f"model.preset: {m['preset']!r} is not supported by the DDP peer "
                              f"(only {', '.join(PRESETS)})")
        depth, card, width, stem, planes = PRESETS[m["preset"]]
    else:
        for k in ("depth", "cardinality", "base_width"):
            if m[k] is None:
                raise ConfigError(f"model.{k}: required when model.preset is not given")
        depth, card, width, stem, planes = m["depth"], m["cardinality"], m["base_width"], 64, 64
    stem = m["stem_channels"] if m["stem_channels"] is not None else stem
    planes = m["base_planes"] if m["base_planes"] is not None else planes
    torch.manual_seed(seed)  # trainer_setup.cpp: torch::manual_seed(training.seed), then the model
    model = CifarResNeXt(depth, card, width, num_classes=m["num_classes"], in_channels=1, stem=stem,
                         base_planes=planes)
    if m["zero_init_residual"]:
        with torch.no_grad():
            for block in model.modules():
                if isinstance(block, Bottleneck):
                    block.bn3.weight.zero_()
    return model


# ---- data --------------------------------------------------------------------------------------------------

def read_idx(folder, split):
    """{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] as common/data/idx.cpp reads them (.gz preferred):
    images uint8 [N, H, W], labels int64 [N]."""
    prefix = "train" if split == "train" else "t10k"

    def load(name, ndims):
        for path in (os.path.join(folder, name + ".gz"), os.path.join(folder, name)):
            if os.path.exists(path):
                break
        else:
            raise FileNotFoundError(f"{os.path.join(folder, name)}[.gz] not found")
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":  # gzip magic, as the worker detects it
            raw = gzip.decompress(raw)
        if raw[:4] != bytes([0, 0, 8, ndims]):
            raise ValueError(f"{path}: not an IDX ubyte file with {ndims} dims")
        dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndims)]
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndims)
        if data.size != math.prod(dims):
            raise ValueError(f"{path}: header declares {math.prod(dims)} bytes, file has {data.size}")
        return data.reshape(dims)

    images = load(f"{prefix}-images-idx3-ubyte", 3)
    labels = load(f"{prefix}-labels-idx1-ubyte", 1).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} {split} images but {len(labels)} labels")
    return images, labels


class Batches:
    """common/data/loader.cpp build_batch: for each index in order, the sample's uint8 pixels, mirrored
    left-right when its draw says so, mapped through the per-channel table (v/255 - mean)/std into a
    float [B, 1, H, W] batch; labels int64 [B]. Bit-identical to the worker's batch tensors."""

    def __init__(self, images, labels, mean, std):
        self.images, self.labels = images, labels
        self.table = rx_order.normalise_table(mean, std)

    def make(self, indices, flips=None):
        idx = np.asarray(indices, dtype=np.int64)
        x = self.images[idx]  # a copy, [B, H, W]
        if flips is not None and flips.any():
            x[flips] = x[flips][:, :, ::-1]
        return torch.from_numpy(self.table[x]).unsqueeze(1), torch.from_numpy(self.labels[idx])


# ---- training ----------------------------------------------------------------------------------------------

def epoch_plan(n_train, world, rank, epoch, training, steps_per_epoch, augment):
    """worker/trainer.cpp train_epoch: this rank's indices for the epoch (shard_indices, global mode,
    seeded by training.seed), cut to whole steps' worth (the last batch may be short: the loader does not
    drop it), and each sample's flip from Rng(mix_seed({seed, epoch, index}))."""
    seed, batch = training["seed"], training["batch_size"]
    indices = rx_order.shard_indices(n_train, world, rank, epoch, seed)
    steps = min(steps_per_epoch, (len(indices) + batch - 1) // batch)
    indices = indices[:steps * batch]
    flips = np.array([rx_order.draw(seed, epoch, i, 0, augment["flip"])[2] for i in indices], dtype=bool)
    return steps, indices, flips


def evaluate(module, test, batch_size, rank, world, memory_format=torch.contiguous_format):
    """Trainer::evaluate_current_weights: rank 0's BatchNorm running statistics broadcast to every rank
    (each kept its own while training), eval mode, rank r takes test samples r, r + w, ... in batches of
    2 * batch_size; correct counts and the summed loss are all-reduced. Returns (accuracy, loss)."""
    for b in module.buffers():
        dist.broadcast(b, 0)
    module.eval()
    n_test = len(test.labels)
    mine = list(range(rank, n_test, world))
    correct, loss_sum = 0, 0.0
    with torch.no_grad():
        for start in range(0, len(mine), 2 * batch_size):
            x, y = test.make(mine[start:start + 2 * batch_size])
            logits = module(x.contiguous(memory_format=memory_format))
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(1) == y).sum())
    sums = torch.tensor([correct, len(mine), loss_sum], dtype=torch.float64)
    dist.all_reduce(sums)
    module.train()
    total = int(sums[1])
    if total != n_test:
        raise RuntimeError(f"evaluated {total} of {n_test} test samples")
    return float(sums[0]) / total, float(sums[2]) / total


def train(args, cfg):
    training, data, augment = cfg["training"], cfg["data"], cfg["data"]["augment"]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", rank))
    # One core per rank, as `mpirun --bind-to core --map-by core` gives the worker's ranks.
    if hasattr(os, "sched_setaffinity") and local < os.cpu_count():
        os.sched_setaffinity(0, {local})
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    threads = training["threads"] or max(1, (os.cpu_count() or 1) // local_world)  # the worker's rule
    torch.set_num_threads(threads)

    def log(msg):
        if rank == 0:
            print(msg, flush=True)

    train_images, train_labels = read_idx(data["path"], "train")
    test_images, test_labels = read_idx(data["path"], "test")
    # Dataset::take_first: max_*_samples keep the first samples of the file (0 = all).
    if data["max_train_samples"] > 0:
        train_images, train_labels = train_images[:data["max_train_samples"]], train_labels[:data["max_train_samples"]]
    if data["max_test_samples"] > 0:
        test_images, test_labels = test_images[:data["max_test_samples"]], test_labels[:data["max_test_samples"]]
    mean, std = augment["mean"][0], augment["std"][0]
    train_set = Batches(train_images, train_labels, mean, std)
    test_set = Batches(test_images, test_labels, mean, std)

    model = build_model(cfg["model"], training["seed"])
    # data.channels_last: the 4-D weights and every input batch in NHWC memory, as the worker's
    # model::to_channels_last and loader give (PyTorch's own channels-last recipe).
    memory_format = torch.channels_last if data["channels_last"] else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    # broadcast_buffers=False: BatchNorm buffers then stay per rank while training, as in the worker,
    # and evaluate() broadcasts rank 0's before evaluating, as the worker does. (The default True would
    # send rank 0's buffers at every forward; training is the same either way, since train-mode BN uses
    # batch statistics and rank 0's own buffers never change by it, but it costs a broadcast per step.)
    ddp = nn.parallel.DistributedDataParallel(model, broadcast_buffers=False, bucket_cap_mb=args.bucket_mb)
    o = training["optimizer"]
    # torch.optim.SGD is the arithmetic of the worker's FusedSGD / torch::optim::SGD (dampening 0, weight
    # decay added to the gradient of every parameter, BN and biases included: one parameter group).
    opt = torch.optim.SGD(ddp.parameters(), lr=o["lr"], momentum=o["momentum"], nesterov=o["nesterov"],
                          weight_decay=o["weight_decay"])

    n_train, batch = len(train_labels), training["batch_size"]
    # Trainer: steps_per_epoch = ceil(ceil(N / w) / batch), capped by max_steps_per_epoch; the LR
    # schedule's fractional epoch uses this (capped) count.
    steps_per_epoch = (rx_order.shard_length(n_train, world) + batch - 1) // batch
    if training["max_steps_per_epoch"] > 0:
        steps_per_epoch = min(steps_per_epoch, training["max_steps_per_epoch"])
    epochs, eval_every = training["epochs"], training["eval_every_epochs"]
    log(f"ddp: world {world} threads/rank {threads} {n_train} train / {len(test_labels)} test samples, "
        f"{steps_per_epoch} steps per epoch, {sum(p.numel() for p in model.parameters())} params, "
        f"bucket_cap_mb {args.bucket_mb}")

    for epoch in range(epochs):
        steps, indices, flips = epoch_plan(n_train, world, rank, epoch, training, steps_per_epoch, augment)
        ddp.train()
        loss_sum, correct, count = 0.0, 0, 0
        window_loss, window_steps = 0.0, 0  # for the progress line: mean loss since the last one
        for step in range(steps):
            # Set before the step, at the fractional epoch (worker/trainer.cpp train_epoch).
            lr = rx_order.learning_rate(training, world, epoch + step / steps_per_epoch)
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = train_set.make(indices[step * batch:(step + 1) * batch], flips[step * batch:(step + 1) * batch])
            x = x.contiguous(memory_format=memory_format)
            opt.zero_grad()
            logits = ddp(x)
            # Mean over this rank's batch. DDP averages the gradients over ranks (divide by the world size,
            # then sum); the worker sums, then divides (common/parallel/reducer.cpp). With 2 ranks both
            # are exact halvings of the same sum, so the averaged gradients are bit-identical.
            loss = F.cross_entropy(logits, y, label_smoothing=training["label_smoothing"])
            loss.backward()
            opt.step()
            step_loss = loss.item()
            loss_sum += step_loss * len(y)
            correct += int((logits.detach().argmax(1) == y).sum())
            count += len(y)
            window_loss += step_loss
            window_steps += 1
            if (step + 1) % training["log_every_steps"] == 0 or step + 1 == steps_per_epoch:
                # The mean over ranks of each rank's window mean, as the worker logs it (one small
                # collective per log step there too).
                mean = torch.tensor([window_loss / window_steps], dtype=torch.float64)
                dist.all_reduce(mean)
                log(f"epoch {epoch + 1}/{epochs} step {step + 1}/{steps_per_epoch} "
                    f"loss {mean.item() / world:.4f} lr {lr:.5f} elapsed {time.monotonic() - T_START:.1f}")
                window_loss, window_steps = 0.0, 0
        sums = torch.tensor([loss_sum, correct, count], dtype=torch.float64)
        dist.all_reduce(sums)
        line = (f"EPOCH {epoch + 1}/{epochs} train_loss={sums[0] / sums[2]:.4f} "
                f"train_acc={sums[1] / sums[2]:.4f}")
        if epoch + 1 == epochs or (eval_every > 0 and (epoch + 1) % eval_every == 0):
            acc, test_loss = evaluate(model, test_set, batch, rank, world, memory_format)
            line += f" test_loss={test_loss:.4f} test_acc={acc:.4f}"
        log(line + f" elapsed={time.monotonic() - T_START:.1f}")

    if args.save_state and rank == 0:
        torch.save(model.state_dict(), args.save_state)
        log(f"state saved to {args.save_state}")
    dist.barrier()
    # destroy_process_group() sometimes hangs one gloo rank at exit with torch 1.13 (see
    # bench/worker/ddp_resnext.py); every rank has passed the barrier, so leave without teardown.
    sys.stdout.flush()
    os._exit(0)


# ---- --self-check ------------------------------------------------------------------------------------------

# Printed by the same C++ program as rx_order.GOLDEN, through the worker's Loader and ResNeXt, from the
# real Fashion-MNIST files: training.seed 1, world 2, epoch 0, batch 64, flip on, mean 0.2860,
# std 0.3530; resnext20_tiny with 1 input channel after torch::manual_seed(1). SHA-256 of the tensors'
# bytes (float32 / int64, contiguous).
GOLDEN_BATCHES = {
    "train_e0_r0_batch0_images": "07ad02893c00456fc4bbcef2bb19bd6ad964c8af85b2a473f2fdae55f902e2b5",
    "train_e0_r0_batch0_labels": "4bf660c6131365eb553059b8059fab0e106b8a7d3e158a8f85e6ac05fb1f27c0",
    "train_e0_r0_last_images": "60ad7736d562532401c3cdba7662cfb96e5cb4f0472e9b3bb991e562633bfd23",
    "train_e0_r1_batch0_images": "2ca0aa01ade13b1f0f29b4daa970a0bfbfaeb892f0604270d93392b11cff0a34",
    "train_e0_r1_batch0_labels": "3e02e30974a65e654bb7d0d6f95a0f76ab501c7e5a042d38b19f47d4f2ba0adf",
    "train_e0_r1_last_images": "4b991154c06a0a92433c0e15206bc491e663d3b0a47e2707831ed94d53aebbc4",
    "test_r0_batch0_images": "c3a7e7824517c6402ffd2aaf653117353d5744058d5934e8d047cb321ad1a23a",
    "init_params": "0848740355eafe4fe3d2b407b396467e7b0a6320992e0199c12a0c5a16ab563e",
    "train_forward_batch0_logits": "896373e18996d18378b9bd7cd9579e9be1e170a2cbdee4f8a027a157e5256017",
}


def _sha(t):
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def self_check(cfg):
    torch.set_num_threads(1)
    print("order, flips and learning rate (bench/python/rx_order.py) against the C++:")
    ok = rx_order.self_check()
    r0 = rx_order.shard_indices(60000, 2, 0, 0, 1)
    r1 = rx_order.shard_indices(60000, 2, 1, 0, 1)
    print(f"  epoch 0 rank 0 first 8 indices: {r0[:8]}")
    print(f"  epoch 0 rank 1 first 8 indices: {r1[:8]}")
    print(f"  epoch 0 rank 0 first 8 flips:   {[int(rx_order.draw(1, 0, i)[2]) for i in r0[:8]]}")
    print(f"batches and initial model from {cfg['data']['path']} against the C++:")
    images, labels = read_idx(cfg["data"]["path"], "train")
    t_images, t_labels = read_idx(cfg["data"]["path"], "test")
    train_set, test_set = Batches(images, labels, 0.2860, 0.3530), Batches(t_images, t_labels, 0.2860, 0.3530)
    training = {"seed": 1, "batch_size": 64}
    got = {}
    for rank in (0, 1):
        steps, idx, flips = epoch_plan(len(labels), 2, rank, 0, training, 10 ** 9, {"flip": True})
        x, y = train_set.make(idx[:64], flips[:64])
        last = (steps - 1) * 64
        got[f"train_e0_r{rank}_batch0_images"], got[f"train_e0_r{rank}_batch0_labels"] = _sha(x), _sha(y)
        got[f"train_e0_r{rank}_last_images"] = _sha(train_set.make(idx[last:], flips[last:])[0])
        if rank == 0:
            first = (x, y)
    got["test_r0_batch0_images"] = _sha(test_set.make(list(range(0, len(t_labels), 2))[:128])[0])
    model = build_model(dict(DEFAULTS["model"], preset="resnext20_tiny"), 1)
    got["init_params"] = hashlib.sha256(b"".join(p.detach().contiguous().numpy().tobytes()
                                                 for p in model.parameters())).hexdigest()
    model.train()
    logits = model(first[0])
    got["train_forward_batch0_logits"] = _sha(logits.detach())
    print(f"  (train-mode loss of batch 0 at init: {F.cross_entropy(logits, first[1]).item():.9g}; "
          f"the C++ printed 2.32493401)")
    for key, want in GOLDEN_BATCHES.items():
        match = got[key] == want
        ok &= match
        print(f"  {key}: {got[key][:16]}...  {'== C++' if match else '!= C++ ' + want[:16] + '...'}")
    print("SELF-CHECK " + ("OK" if ok else "FAILED"), flush=True)
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=os.path.join(REPO, "configs", "fashion_mnist_fast.json"),
                    help="the worker's job config (JSON)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, as resnext_worker --set (repeatable)")
    ap.add_argument("--bucket-mb", type=float, default=25.0,
                    help="DDP bucket_cap_mb (default: DDP's own 25; the 0.6 MB model is one bucket)")
    ap.add_argument("--save-state", metavar="PATH", help="rank 0 saves the final state_dict here")
    ap.add_argument("--self-check", action="store_true",
                    help="compare the port with values printed by the C++ and exit (no launcher needed)")
    args = ap.parse_args()
    try:
        cfg = load_config(args.config, [parse_override(kv) for kv in args.set])
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    if args.self_check:
        sys.exit(0 if self_check(cfg) else 1)
    train(args, cfg)


if __name__ == "__main__":
    main()

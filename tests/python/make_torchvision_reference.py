#!/usr/bin/env python3
"""Writes a randomly initialised torchvision model's state_dict, a fixed input and its eval-mode output.

The C++ test tests/model/test_torchvision_equivalence.cpp loads these and must reproduce the output.
Nothing is downloaded: weights are random (seeded), and BN running statistics are randomised too so
that eval mode exercises them.
Usage: make_torchvision_reference.py OUT_DIR [MODEL]
"""
import os
import sys

import torch
import torchvision


def main():
    out_dir = sys.argv[1]
    name = sys.argv[2] if len(sys.argv) > 2 else "resnext50_32x4d"
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(1234)
    model = getattr(torchvision.models, name)(weights=None)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    model.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        y = model(x)
    torch.save(model.state_dict(), os.path.join(out_dir, name + "_state_dict.pt"))
    torch.save({"input": x, "output": y}, os.path.join(out_dir, name + "_io.pt"))
    print(f"wrote {name}: {sum(p.numel() for p in model.parameters())} parameters, output {tuple(y.shape)}")


if __name__ == "__main__":
    main()

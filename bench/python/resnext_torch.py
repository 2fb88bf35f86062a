"""The PyTorch peers' ResNeXt: the one Python copy of the worker's CIFAR architecture, shared by the
benchmark peers (bench/gpu/torch_peer.py, bench/worker/ddp_resnext.py). Their drivers put bench/python
on PYTHONPATH; by hand: PYTHONPATH=bench/python python3 bench/gpu/torch_peer.py ...
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Bottleneck(nn.Module):
    """common/model/resnext.cpp BottleneckImpl: 1x1 -> grouped 3x3 (carries the stride, as in ResNet
    v1.5) -> 1x1, with a 1x1 projection + BN shortcut where the shape changes."""

    def __init__(self, cin, width, cout, groups, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class CifarResNeXt(nn.Module):
    """The paper's CIFAR ResNeXt: 3x3 stem (no max-pool), 3 stages of (depth-2)/9 blocks, stage planes
    base_planes x 1/2/4 with 4x outputs, grouped width floor(planes*base_width/64)*cardinality, stride 2
    at the first block of stages 2 and 3, global average pool, fc. The worker's presets
    (common/model/resnext_spec.cpp): resnext29_8x64d is (29, 8, 64), stem 64, base_planes 64;
    resnext20_tiny is (20, 4, 16), stem 32, base_planes 16."""

    def __init__(self, depth, cardinality, base_width, num_classes=10, in_channels=3, stem=64, base_planes=64):
        super().__init__()
        n = (depth - 2) // 9
        self.conv1 = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        cin, stages = stem, []
        for s in range(3):
            planes = base_planes << s
            width, cout = (planes * base_width // 64) * cardinality, planes * 4
            blocks = []
            for b in range(n):
                blocks.append(Bottleneck(cin, width, cout, cardinality, 2 if (b == 0 and s > 0) else 1))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():  # the worker's init; it does not change speed
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnext20_tiny(in_channels=1, num_classes=10):
    """The worker's resnext20_tiny preset (the training-throughput benchmark's model)."""
    return CifarResNeXt(20, 4, 16, num_classes=num_classes, in_channels=in_channels, stem=32, base_planes=16)

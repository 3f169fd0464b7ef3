"""airbench94's training loop, extracted so that it runs on any device (a CPU included), for
`scripts/bench.py ops` to count the backend ops its steps dispatch beside ours.

Source: the `airbench` package 0.1.8 on PyPI (Keller Jordan, https://github.com/KellerJordan/cifar10-airbench),
files airbench/lib_airbench94.py (network, hyper-parameters) and airbench/utils.py (CifarLoader, batch_crop,
batch_flip_lr, whitening init, LookaheadState, train), under the MIT License:

    Copyright (c) 2024 Keller Jordan

    Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
    associated documentation files (the "Software"), to deal in the Software without restriction, including
    without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
    copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the
    following conditions:

    The above copyright notice and this permission notice shall be included in all copies or substantial
    portions of the Software.

    THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT
    LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO
    EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER
    IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR
    THE USE OR OTHER DEALINGS IN THE SOFTWARE.

What changed from the source, and why (nothing in the step):
- the data is passed in (uint8 (N, 3, 32, 32) images and (N,) int64 labels on `device`) instead of
  loaded from cifar10/train.pt onto GPU 0; the normalisation's mean/std are airbench's constants;
- `dtype`: the network and images are fp16 with fp32 BatchNorm on CUDA as published; on a CPU fp32
  (the same ops: airbench's network has no casts inside);
- no evaluation, logging or CUDA-event timing (airbench's `verbose=False` path); `epochs` is a
  parameter (the count takes two runs of different lengths), and so are the widths (a CPU counts the
  same ops on a narrower network sooner).
"""
from __future__ import annotations

from math import ceil

import torch
import torch.nn.functional as F
from torch import nn

HYP = {"train_epochs": 9.9, "batch_size": 1024, "lr": 11.5, "momentum": 0.85, "weight_decay": 0.0153,
       "bias_scaler": 64.0, "label_smoothing": 0.2, "whiten_bias_epochs": 3, "translate": 2,
       "widths": (64, 256, 256), "batchnorm_momentum": 0.6, "scaling_factor": 1 / 9}
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class Mul(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x * self.scale


class Flatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


class BatchNorm(nn.BatchNorm2d):
    def __init__(self, num_features, momentum, eps=1e-12, weight=False, bias=True):
        super().__init__(num_features, eps=eps, momentum=1 - momentum)
        self.weight.requires_grad = weight
        self.bias.requires_grad = bias


class Conv(nn.Conv2d):
    def __init__(self, in_channels, out_channels, kernel_size=3, padding="same", bias=False):
        super().__init__(in_channels, out_channels, kernel_size=kernel_size, padding=padding, bias=bias)

    def reset_parameters(self):
        super().reset_parameters()
        if self.bias is not None:
            self.bias.data.zero_()
        w = self.weight.data
        torch.nn.init.dirac_(w[:w.size(1)])


class ConvGroup(nn.Module):
    def __init__(self, channels_in, channels_out, batchnorm_momentum):
        super().__init__()
        self.conv1 = Conv(channels_in, channels_out)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = BatchNorm(channels_out, batchnorm_momentum)
        self.conv2 = Conv(channels_out, channels_out)
        self.norm2 = BatchNorm(channels_out, batchnorm_momentum)
        self.activ = nn.GELU()

    def forward(self, x):
        return self.activ(self.norm2(self.conv2(self.activ(self.norm1(self.pool(self.conv1(x)))))))


def make_net94(device: torch.device, dtype: torch.dtype, widths: tuple[int, int, int] = HYP["widths"]) -> nn.Sequential:
    momentum = HYP["batchnorm_momentum"]
    net = nn.Sequential(
        Conv(3, 24, 2, padding=0, bias=True), nn.GELU(),
        ConvGroup(24, widths[0], momentum), ConvGroup(widths[0], widths[1], momentum),
        ConvGroup(widths[1], widths[2], momentum),
        nn.MaxPool2d(3), Flatten(), nn.Linear(widths[2], 10, bias=False), Mul(HYP["scaling_factor"]))
    net[0].weight.requires_grad = False
    net = net.to(device, dtype).to(memory_format=torch.channels_last)
    for module in net.modules():
        if isinstance(module, BatchNorm):
            module.float()
    return net


def batch_flip_lr(inputs):
    flip_mask = (torch.rand(len(inputs), device=inputs.device) < 0.5).view(-1, 1, 1, 1)
    return torch.where(flip_mask, inputs.flip(-1), inputs)


def batch_crop(images, crop_size):
    r = (images.size(-1) - crop_size) // 2
    shifts = torch.randint(-r, r + 1, size=(len(images), 2), device=images.device)
    images_out = torch.empty((len(images), 3, crop_size, crop_size), device=images.device, dtype=images.dtype)
    for sy in range(-r, r + 1):  # (the source's branch for r <= 2, airbench94's translate)
        for sx in range(-r, r + 1):
            mask = (shifts[:, 0] == sy) & (shifts[:, 1] == sx)
            images_out[mask] = images[mask, :, r + sy:r + sy + crop_size, r + sx:r + sx + crop_size]
    return images_out


class CifarLoader:
    """airbench's training loader (aug: flip, translate 2; altflip), on images already on the device."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, dtype: torch.dtype):
        self.epoch, self.batch_size, self.labels = 0, batch_size, labels
        self.images = (images.to(dtype) / 255).to(memory_format=torch.channels_last)
        mean = torch.tensor(CIFAR_MEAN, device=images.device, dtype=dtype).view(-1, 1, 1)
        std = torch.tensor(CIFAR_STD, device=images.device, dtype=dtype).view(-1, 1, 1)
        self.normalize = lambda x: (x - mean) / std  # torchvision's T.Normalize
        self.proc_images = {}

    def __len__(self):
        return len(self.images) // self.batch_size

    def __iter__(self):
        if self.epoch == 0:
            images = self.proc_images["norm"] = self.normalize(self.images)
            images = self.proc_images["flip"] = batch_flip_lr(images)
            self.proc_images["pad"] = F.pad(images, (HYP["translate"],) * 4, "reflect")
        images = batch_crop(self.proc_images["pad"], self.images.shape[-2])
        if self.epoch % 2 == 1:
            images = images.flip(-1)
        self.epoch += 1
        indices = torch.randperm(len(images), device=images.device)
        for i in range(len(self)):
            idxs = indices[i * self.batch_size:(i + 1) * self.batch_size]
            yield images[idxs], self.labels[idxs]


def init_whitening_conv(layer, train_set, eps=5e-4):
    c, (h, w) = train_set.shape[1], layer.weight.data.shape[2:]
    patches = train_set.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c, h, w).float()
    n = len(patches)
    patches_flat = patches.view(n, -1)
    eigenvalues, eigenvectors = torch.linalg.eigh((patches_flat.T @ patches_flat) / n, UPLO="U")
    eigenvalues, eigenvectors = eigenvalues.flip(0).view(-1, 1, 1, 1), eigenvectors.T.reshape(c * h * w, c, h, w).flip(0)
    scaled = eigenvectors / torch.sqrt(eigenvalues + eps)
    layer.weight.data[:] = torch.cat((scaled, -scaled))


class LookaheadState:
    def __init__(self, net):
        self.net_ema = {k: v.clone() for k, v in net.state_dict().items()}

    def update(self, net, decay):
        for ema_param, net_param in zip(self.net_ema.values(), net.state_dict().values()):
            if net_param.dtype in (torch.half, torch.float):
                ema_param.lerp_(net_param, 1 - decay)
                net_param.copy_(ema_param)


def triangle(steps, start=0, end=0, peak=0.5):
    xp = torch.tensor([0, int(peak * steps), steps])
    fp = torch.tensor([start, 1, end])
    x = torch.arange(1 + steps)
    m = (fp[1:] - fp[:-1]) / (xp[1:] - xp[:-1])
    b = fp[:-1] - (m * xp[:-1])
    indices = torch.clamp(torch.sum(torch.ge(x[:, None], xp[None, :]), 1) - 1, 0, len(m) - 1)
    return m[indices] * x + b[indices]


def train94(images: torch.Tensor, labels: torch.Tensor, epochs: float = HYP["train_epochs"],
            batch_size: int = HYP["batch_size"], dtype: torch.dtype | None = None,
            widths: tuple[int, int, int] | None = None) -> nn.Module:
    """airbench94's `train(..., verbose=False)` on `images` (N, 3, H, W) uint8 and `labels` (N,) int64, both
    on the training device; `dtype`: the network's (default fp16 on CUDA, as published; fp32 elsewhere);
    `widths`: its blocks' (default airbench94's 64, 256, 256). Returns the trained network."""
    device = images.device
    dtype = dtype or (torch.half if device.type == "cuda" else torch.float32)
    train_loader = CifarLoader(images, labels, batch_size, dtype)
    momentum = HYP["momentum"]
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    lr = HYP["lr"] / kilostep_scale
    wd = HYP["weight_decay"] * batch_size / kilostep_scale
    lr_biases = lr * HYP["bias_scaler"]
    loss_fn = nn.CrossEntropyLoss(label_smoothing=HYP["label_smoothing"], reduction="none")
    total_train_steps = ceil(len(train_loader) * epochs)
    model = make_net94(device, dtype, widths or HYP["widths"])
    current_steps = 0
    norm_biases = [p for k, p in model.named_parameters() if "norm" in k and p.requires_grad]
    other_params = [p for k, p in model.named_parameters() if "norm" not in k and p.requires_grad]
    optimizer = torch.optim.SGD([dict(params=norm_biases, lr=lr_biases, weight_decay=wd / lr_biases),
                                 dict(params=other_params, lr=lr, weight_decay=wd / lr)], momentum=momentum, nesterov=True)
    lr_schedule = triangle(total_train_steps, start=0.2, end=0.07, peak=0.23)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_schedule[i])
    alpha_schedule = 0.95 ** 5 * (torch.arange(total_train_steps + 1) / total_train_steps) ** 3
    lookahead_state = LookaheadState(model)
    init_whitening_conv(model[0], train_loader.normalize(train_loader.images[:5000]))
    for epoch in range(ceil(epochs)):
        model[0].bias.requires_grad = (epoch < HYP["whiten_bias_epochs"])
        model.train()
        for inputs, labels in train_loader:
            outputs = model(inputs)
            loss = loss_fn(outputs, labels).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            current_steps += 1
            if current_steps % 5 == 0:
                lookahead_state.update(model, decay=alpha_schedule[current_steps].item())
            if current_steps >= total_train_steps:
                lookahead_state.update(model, decay=1.0)
                break
    return model

"""Decoders: DCSwin-style dense aggregation, UNetFormer-style global-local attention, FPN.

Every decoder takes the list of stage maps from the backbone adapter (finest
first) and returns class logits at the finest stage's resolution; the model
upsamples them to the input size. ``forward_features`` also returns the
decoder's own multi-scale maps (finest first, ``dim`` channels each, at the
encoder stages' strides), which MS/CS can contrast (``loss.mscs_features: decoder``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aerialct.errors import ConfigError


def conv_bn_relu(cin: int, cout: int, k: int = 3, groups: int = 1) -> nn.Sequential:
    """Conv (same padding, no bias) -> BatchNorm -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def conv_bn(cin: int, cout: int, k: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (same padding, no bias) -> BatchNorm."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)
    )


def separable_conv_bn(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    """Depthwise conv -> BatchNorm -> pointwise conv."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, k, padding=k // 2, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.Conv2d(cin, cout, 1, bias=False),
    )


def _up(x: Tensor, like: Tensor) -> Tensor:
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def _require_levels(name: str, channels: list[int], n: int) -> None:
    if len(channels) != n:
        raise ConfigError(
            f"model.decoder {name!r} needs {n} backbone stages, the backbone gives "
            f"{len(channels)}; set model.out_indices to {n} levels or use decoder 'fpn'"
        )


# ---------------------------------------------------------------------------
# FPN


class FPNDecoder(nn.Module):
    """Plain feature pyramid: lateral 1x1, top-down sum, 3x3 smoothing, merge at stride 1/4."""

    def __init__(self, channels: list[int], num_classes: int, dim: int = 64) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(conv_bn_relu(c, dim, 1) for c in channels)
        self.smooth = nn.ModuleList(conv_bn_relu(dim, dim, 3) for _ in channels)
        self.fuse = conv_bn_relu(dim, dim, 3)
        self.classifier = nn.Conv2d(dim, num_classes, 1)

        self.feature_channels = [dim] * len(channels)

    def forward_features(self, feats: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Logits at the finest stride ``(B, K, h_0, w_0)`` and the smoothed pyramid maps."""
        lat = [m(f) for m, f in zip(self.lateral, feats, strict=True)]  # (B, D, h_i, w_i)
        for i in range(len(lat) - 2, -1, -1):
            lat[i] = lat[i] + _up(lat[i + 1], lat[i])
        maps = [m(p) for m, p in zip(self.smooth, lat, strict=True)]  # (B, D, h_i, w_i)
        out = sum(_up(p, lat[0]) for p in maps)
        return self.classifier(self.fuse(out)), maps  # (B, K, h_0, w_0)

    def forward(self, feats: list[Tensor]) -> Tensor:
        """Logits at the finest stride ``(B, K, h_0, w_0)``."""
        return self.forward_features(feats)[0]


# ---------------------------------------------------------------------------
# DCSwin-style densely connected feature aggregation


class LinearAttention(nn.Module):
    """Kernel (linear) spatial attention, O(N) in the number of pixels (as in DCSwin/MANet)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.q = nn.Conv2d(dim, dim // 4 or 1, 1)
        self.k = nn.Conv2d(dim, dim // 4 or 1, 1)
        self.v = nn.Conv2d(dim, dim, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """``x`` plus linear (kernelised) self-attention over all positions, ``(B, C, h, w)``."""
        b, c, h, w = x.shape
        n = h * w
        q = F.normalize(self.q(x).flatten(2), dim=1)  # (B, c', N)
        k = F.normalize(self.k(x).flatten(2), dim=1)  # (B, c', N)
        v = self.v(x).flatten(2)  # (B, C, N)
        kv = torch.einsum("bmn,bcn->bmc", k, v)  # (B, c', C)
        norm = 1.0 / (n + torch.einsum("bmn,bm->bn", q, k.sum(-1) + self.eps))  # (B, N)
        out = (v.sum(-1, keepdim=True) + torch.einsum("bmn,bmc->bcn", q, kv)) * norm[:, None]
        return x + self.gamma * out.view(b, c, h, w)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation channel reweighting."""

    def __init__(self, dim: int, ratio: int = 4) -> None:
        super().__init__()
        hidden = max(dim // ratio, 8)
        self.mlp = nn.Sequential(
            nn.Conv2d(dim, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, dim, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        """``x`` reweighted per channel, ``(B, C, h, w)``."""
        att = self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(att)  # (B, C, h, w)


class DCSwinDecoder(nn.Module):
    """Densely connected aggregation decoder in the spirit of DCSwin's DCFAM.

    Each stage is projected to ``dim`` channels; the deepest gets linear spatial
    attention; every shallower stage is fused with *all* deeper decoded stages
    (dense top-down connections) through 1x1 fusion, channel attention and a
    3x3 conv; the head densely concatenates all decoded stages at stride 1/4.
    """

    def __init__(self, channels: list[int], num_classes: int, dim: int = 64) -> None:
        super().__init__()
        _require_levels("dcswin", channels, 4)
        n = len(channels)
        self.lateral = nn.ModuleList(conv_bn_relu(c, dim, 1) for c in channels)
        self.deep_attention = LinearAttention(dim)
        self.fuse = nn.ModuleList(
            nn.Sequential(
                conv_bn_relu(dim * (n - i), dim, 1), ChannelAttention(dim), conv_bn_relu(dim, dim)
            )
            for i in range(n - 1)
        )
        self.head_attention = LinearAttention(dim)
        self.head = nn.Sequential(
            conv_bn_relu(dim * n, dim, 1),
            conv_bn_relu(dim, dim, 3),
            nn.Dropout2d(0.1),
            nn.Conv2d(dim, num_classes, 1),
        )

        self.feature_channels = [dim] * n

    def forward(self, feats: list[Tensor]) -> Tensor:
        """Logits at the finest stride ``(B, K, h_0, w_0)``."""
        return self.forward_features(feats)[0]

    def forward_features(self, feats: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Logits at the finest stride and the densely aggregated maps (finest first)."""
        lat = [m(f) for m, f in zip(self.lateral, feats, strict=True)]  # (B, D, h_i, w_i)
        n = len(lat)
        dec: list[Tensor] = [lat[-1]] * n
        dec[-1] = self.deep_attention(lat[-1])
        for i in range(n - 2, -1, -1):
            dense = [lat[i], *(_up(dec[j], lat[i]) for j in range(i + 1, n))]
            dec[i] = self.fuse[i](torch.cat(dense, 1))  # (B, D, h_i, w_i)
        fused = torch.cat([dec[0], *(_up(d, dec[0]) for d in dec[1:])], 1)  # (B, n*D, h_0, w_0)
        x = self.head[0](fused)
        x = self.head_attention(x)
        return self.head[1:](x), dec  # (B, K, h_0, w_0), [(B, D, h_i, w_i)]


# ---------------------------------------------------------------------------
# UNetFormer-style global-local decoder


class GlobalLocalAttention(nn.Module):
    """Window self-attention (global branch) + 1x1/3x3 convolutions (local branch).

    The global branch attends inside non-overlapping ``window x window`` windows
    with a learned relative position bias, then mixes context across windows
    with horizontal and vertical strip average pooling (UNetFormer's cross-shaped
    window context); the local branch is the sum of a 1x1 and a 3x3 conv-BN.
    """

    bias_index: Tensor
    """(N, N) index of each window position pair into ``bias_table`` (a buffer)."""

    def __init__(self, dim: int, heads: int = 8, window: int = 8) -> None:
        super().__init__()
        heads = max(1, min(heads, dim // 8)) if dim >= 8 else 1
        self.heads = heads
        self.window = window
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.local1 = conv_bn(dim, dim, 1)
        self.local2 = conv_bn(dim, dim, 3)
        self.pool_x = nn.AvgPool2d((window, 1), stride=1, padding=(window // 2, 0))
        self.pool_y = nn.AvgPool2d((1, window), stride=1, padding=(0, window // 2))
        self.proj = separable_conv_bn(dim, dim, window - 1 if window % 2 == 0 else window)
        self.bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        coords = torch.stack(
            torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        ).flatten(1)  # (2, w*w)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer(
            "bias_index", rel[..., 0] * (2 * window - 1) + rel[..., 1], persistent=False
        )

    def forward(self, x: Tensor) -> Tensor:
        """Window attention with strip context (global) plus the local convs, ``(B, C, h, w)``."""
        b, c, h, w = x.shape
        ws, nh = self.window, self.heads
        local = self.local1(x) + self.local2(x)  # (B, C, h, w)
        ph, pw = (-h) % ws, (-w) % ws
        xp = F.pad(x, (0, pw, 0, ph))
        hp, wp = h + ph, w + pw
        qkv = self.qkv(xp)  # (B, 3C, hp, wp)
        qkv = qkv.view(b, 3, nh, c // nh, hp // ws, ws, wp // ws, ws)
        qkv = qkv.permute(1, 0, 4, 6, 2, 5, 7, 3).reshape(3, -1, nh, ws * ws, c // nh)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B*nW, nh, ws*ws, hd)
        bias = self.bias_table[self.bias_index].permute(2, 0, 1).to(q.dtype)  # (nh, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B*nW, nh, N, hd)
        out = out.view(b, hp // ws, wp // ws, nh, ws, ws, c // nh)
        out = out.permute(0, 3, 6, 1, 4, 2, 5).reshape(b, c, hp, wp)[:, :, :h, :w]
        ctx = self.pool_x(out)[:, :, :h, :w] + self.pool_y(out)[:, :, :h, :w]
        return self.proj(out + ctx + local)  # (B, C, h, w)


class GLTBlock(nn.Module):
    """Global-local Transformer block: attention and MLP sub-layers with BN pre-norm."""

    def __init__(self, dim: int, heads: int = 8, window: int = 8, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = GlobalLocalAttention(dim, heads, window)
        self.norm2 = nn.BatchNorm2d(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Conv2d(dim, hidden, 1), nn.ReLU6(inplace=True), nn.Conv2d(hidden, dim, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Attention, then MLP, each with a residual; ``(B, C, h, w)``."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class WeightedFusion(nn.Module):
    """Upsample the decoder map and add the projected skip with learned normalised weights."""

    def __init__(self, skip_channels: int, dim: int) -> None:
        super().__init__()
        self.pre = conv_bn(skip_channels, dim, 1)
        self.weights = nn.Parameter(torch.ones(2))
        self.post = conv_bn_relu(dim, dim, 3)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """The decoder map fused with the skip, at the skip's size ``(B, D, h, w)``."""
        w = F.relu(self.weights)
        w = w / (w.sum() + 1e-8)
        return self.post(w[0] * self.pre(skip) + w[1] * _up(x, skip))


class FeatureRefinementHead(nn.Module):
    """UNetFormer's FRH at stride 1/4: weighted fusion, then spatial + channel attention paths."""

    def __init__(self, skip_channels: int, dim: int) -> None:
        super().__init__()
        self.fusion = WeightedFusion(skip_channels, dim)
        self.spatial = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, groups=dim), nn.Sigmoid())
        hidden = max(dim // 16, 4)
        self.channel = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(dim, hidden, 1),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, dim, 1),
            nn.Sigmoid(),
        )
        self.shortcut = conv_bn(dim, dim, 1)
        self.proj = separable_conv_bn(dim, dim, 3)
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """The refined finest-stride map ``(B, D, h_0, w_0)``."""
        x = self.fusion(x, skip)  # (B, D, h0, w0)
        refined = self.spatial(x) * x + self.channel(x) * x
        return self.act(self.proj(refined) + self.shortcut(x))


class UNetFormerDecoder(nn.Module):
    """UNetFormer-style decoder: GLT blocks at strides 32/16/8, weighted skip fusion, FRH at 4."""

    def __init__(
        self, channels: list[int], num_classes: int, dim: int = 64, window: int = 8
    ) -> None:
        super().__init__()
        _require_levels("unetformer", channels, 4)
        self.pre = conv_bn(channels[3], dim, 1)
        self.b4 = GLTBlock(dim, window=window)
        self.f3 = WeightedFusion(channels[2], dim)
        self.b3 = GLTBlock(dim, window=window)
        self.f2 = WeightedFusion(channels[1], dim)
        self.b2 = GLTBlock(dim, window=window)
        self.frh = FeatureRefinementHead(channels[0], dim)
        self.head = nn.Sequential(
            conv_bn_relu(dim, dim, 3), nn.Dropout2d(0.1), nn.Conv2d(dim, num_classes, 1)
        )

        self.feature_channels = [dim] * 4

    def forward(self, feats: list[Tensor]) -> Tensor:
        """Logits at the finest stride ``(B, K, h_0, w_0)``."""
        return self.forward_features(feats)[0]

    def forward_features(self, feats: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Logits at the finest stride and the decoder's maps at the encoder's four strides."""
        r1, r2, r3, r4 = feats
        x32 = self.b4(self.pre(r4))  # (B, D, H/32, W/32)
        x16 = self.b3(self.f3(x32, r3))  # (B, D, H/16, W/16)
        x8 = self.b2(self.f2(x16, r2))  # (B, D, H/8, W/8)
        x4 = self.frh(x8, r1)  # (B, D, H/4, W/4)
        return self.head(x4), [x4, x8, x16, x32]  # (B, K, H/4, W/4)


DECODERS = {"dcswin": DCSwinDecoder, "unetformer": UNetFormerDecoder, "fpn": FPNDecoder}


def build_decoder(name: str, channels: list[int], num_classes: int, dim: int) -> nn.Module:
    """The decoder named ``name`` (dcswin, unetformer, fpn) for encoder ``channels``."""
    if name not in DECODERS:
        raise ConfigError(f"model.decoder {name!r} is not one of {', '.join(DECODERS)}")
    return DECODERS[name](channels, num_classes, dim)

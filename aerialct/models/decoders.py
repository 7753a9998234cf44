"""Decoders: DCSwin-style dense aggregation, UNetFormer-style global-local attention, FPN.

Every decoder takes the list of stage maps from the backbone adapter (finest
first) and returns class logits at the finest stage's resolution; the model
upsamples them to the input size. ``forward_features`` also returns the
decoder's own multi-scale maps (finest first, ``dim`` channels each, at the
encoder stages' strides), which MS/CS can contrast (``loss.mscs_features: decoder``).
"""

from __future__ import annotations

import math

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


def conv_bn(cin: int, cout: int, k: int = 1, groups: int = 1, stride: int = 1) -> nn.Sequential:
    """Conv (padding ``(stride - 1 + k - 1) // 2``, no bias) -> BatchNorm."""
    return nn.Sequential(
        nn.Conv2d(
            cin, cout, k, stride=stride, padding=(stride + k - 2) // 2, groups=groups, bias=False
        ),
        nn.BatchNorm2d(cout),
    )


def separable_conv_bn(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    """Depthwise conv (padding ``(k - 1) // 2``) -> BatchNorm -> pointwise conv."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, k, padding=(k - 1) // 2, groups=cin, bias=False),
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
# DCSwin: densely connected feature aggregation (DCFAM), as in the reference code


class SpatialLinearAttention(nn.Module):
    """Linear (kernelised) attention over the positions, O(N) in the pixels.

    With ``q``, ``k`` the L2-normalised (over channels) 1x1 projections to ``C / 8``
    channels and ``v`` a 1x1 projection: ``out_n = (sum_m v_m + (K V^T)^T q_n) /
    (N + q_n . (sum_m k_m + eps))``, returned as ``x + gamma * out`` (gamma starts at 0).
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.q = nn.Conv2d(dim, max(dim // 8, 1), 1)
        self.k = nn.Conv2d(dim, max(dim // 8, 1), 1)
        self.v = nn.Conv2d(dim, dim, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """``x`` plus attention over all positions, ``(B, C, h, w)``."""
        b, c, h, w = x.shape
        n = h * w
        q = _unit_channels(self.q(x).flatten(2))  # (B, c', N)
        k = _unit_channels(self.k(x).flatten(2))  # (B, c', N)
        v = self.v(x).flatten(2)  # (B, C, N)
        kv = torch.einsum("bmn,bcn->bmc", k, v)  # (B, c', C)
        norm = 1.0 / (n + torch.einsum("bmn,bm->bn", q, k.sum(-1) + self.eps))  # (B, N)
        out = (v.sum(-1, keepdim=True) + torch.einsum("bmn,bmc->bcn", q, kv)) * norm[:, None]
        return x + self.gamma * out.view(b, c, h, w)


class ChannelLinearAttention(nn.Module):
    """Linear attention between channels (no projections, one ``gamma``).

    Each pixel's channel vector is L2-normalised (``u``); channel ``c`` gets
    ``(sum_c' x_c' + sum_m (X U^T)_cm u_m) / (N + sum_n u_cn (sum_c' u_c'n + eps))``,
    returned as ``x + gamma * out`` (gamma starts at 0).
    """

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """``x`` plus attention across its channels, ``(B, C, h, w)``."""
        b, c, h, w = x.shape
        v = x.flatten(2)  # (B, C, N)
        u = _unit_channels(v)  # (B, C, N) each pixel's channel vector of length 1
        norm = 1.0 / (h * w + torch.einsum("bcn,bn->bc", u, u.sum(1) + self.eps))  # (B, C)
        mix = torch.einsum("bcn,bmn->bcm", v, u)  # (B, C, C)
        out = v.sum(1, keepdim=True) + torch.einsum("bcm,bmn->bcn", mix, u)  # (B, C, N)
        return x + self.gamma * (out * norm[..., None]).view(b, c, h, w)


def _unit_channels(t: Tensor) -> Tensor:
    """``t`` ``(B, C, N)`` divided by its L2 norm over the channels."""
    return t / t.norm(dim=1, keepdim=True)


class DownConnection(nn.Module):
    """A residual stride-2 block: two 3x3 conv-BN (ReLU between) plus a 3x3 stride-2 conv-BN."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3)
        self.conv2 = conv_bn(cout, cout, 3, stride=2)
        self.skip = conv_bn(cin, cout, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, cout, ceil(h / 2), ceil(w / 2))``."""
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.skip(x))


def separable_conv_bn_relu(cin: int, cout: int, dilation: int) -> nn.Sequential:
    """Depthwise 3x3 conv (dilated) -> pointwise conv -> BatchNorm -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, padding=dilation, dilation=dilation, groups=cin, bias=False),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class LongRangeUp(nn.Module):
    """Two dilated separable convs, each followed by a nearest x2 upsampling (DCFAM's long-range path)."""

    def __init__(self, c: tuple[int, int, int], rates: tuple[int, int]) -> None:
        super().__init__()
        self.conv1 = separable_conv_bn_relu(c[0], c[1], rates[0])
        self.conv2 = separable_conv_bn_relu(c[1], c[2], rates[1])

    def forward(self, x: Tensor, mid: Tensor, out: Tensor) -> Tensor:
        """From ``x``'s stride to ``out``'s (four times finer), through ``mid``'s size."""
        x = F.interpolate(self.conv1(x), size=mid.shape[-2:], mode="nearest")
        return F.interpolate(self.conv2(x), size=out.shape[-2:], mode="nearest")


class DCSwinDecoder(nn.Module):
    """DCSwin's decoder: the densely connected feature aggregation module (DCFAM).

    It works at the encoder's own widths ``C1..C4`` (strides 4..32), as the reference
    (GeoSeg's ``DCSwin.py``, used unchanged by the CT authors' fork); ``dim`` is not
    used. With ``pa`` one spatial linear attention (shared by its two uses), ``ca`` one
    channel linear attention (shared) and ``down`` residual stride-2 blocks::

        d32 = conv1x1(x32) + down(pa(down(x8)))        (stride 32, C4)
        d16 = pa(x16) + down(ca(down(x4)))             (stride 16, C3)
        d8  = ca(x8) + long_range(d32)                 (stride 8,  C2)
        d4  = long_range(d16) + conv1x1(x4)            (stride 4,  C1)
        logits = head(dropout(d4 + up(d8)))

    ``long_range``: two dilated (6, 12) separable convs, each then upsampled x2
    (nearest). The logits go to the input size by bilinear interpolation with
    ``align_corners=True`` (the reference's ``UpsamplingBilinear2d``).
    """

    align_corners = True

    def __init__(
        self,
        channels: list[int],
        num_classes: int,
        dim: int = 64,
        rates: tuple[int, int] = (6, 12),
        dropout: float = 0.05,
    ) -> None:
        super().__init__()
        _require_levels("dcswin", channels, 4)
        c1, c2, c3, c4 = channels
        self.conv32 = nn.Conv2d(c4, c4, 1, bias=False)
        self.conv4 = nn.Conv2d(c1, c1, 1, bias=False)
        self.long32 = LongRangeUp((c4, c3, c2), rates)
        self.long16 = LongRangeUp((c3, c2, c1), rates)
        self.ca = ChannelLinearAttention()
        self.pa = SpatialLinearAttention(c3)
        self.down4_8 = DownConnection(c1, c2)
        self.down8_16a = DownConnection(c2, c3)  # x4's path to stride 16
        self.down8_16b = DownConnection(c2, c3)  # x8's path to stride 32
        self.down16_32 = DownConnection(c3, c4)
        self.up = conv_bn_relu(c2, c1, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.head = nn.Sequential(
            conv_bn_relu(c1, c1, 3), nn.Conv2d(c1, num_classes, 1, bias=False)
        )

        self.feature_channels = list(channels)

    def forward(self, feats: list[Tensor]) -> Tensor:
        """Logits at the finest stride ``(B, K, h_0, w_0)``."""
        return self.forward_features(feats)[0]

    def forward_features(self, feats: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Logits at the finest stride and the aggregated maps ``d4, d8, d16, d32``."""
        x4, x8, x16, x32 = feats
        d32 = self.conv32(x32) + self.down16_32(self.pa(self.down8_16b(x8)))  # (B, C4, .)
        d16 = self.pa(x16) + self.down8_16a(self.ca(self.down4_8(x4)))  # (B, C3, .)
        d8 = self.ca(x8) + self.long32(d32, x16, x8)  # (B, C2, H/8, W/8)
        d4 = self.long16(d16, x8, x4) + self.conv4(x4)  # (B, C1, H/4, W/4)
        up = F.interpolate(self.up(d8), size=d4.shape[-2:], mode="nearest")
        return self.head(self.dropout(d4 + up)), [d4, d8, d16, d32]


# ---------------------------------------------------------------------------
# UNetFormer: global-local Transformer blocks, as in the reference code


def _pad_reflect(x: Tensor, right: int, bottom: int) -> Tensor:
    """Pad right and bottom by reflection (zeros where the map is too small to reflect)."""
    if not right and not bottom:
        return x
    small = right >= x.shape[-1] or bottom >= x.shape[-2]
    return F.pad(x, (0, right, 0, bottom), mode="constant" if small else "reflect")


class GlobalLocalAttention(nn.Module):
    """Window self-attention (global branch) + 3x3/1x1 conv-BN (local branch), UNetFormer's.

    The map is padded (reflection) to whole ``window x window`` windows; multi-head
    attention runs inside each window with a learned relative position bias; the
    result is cropped back and replaced by its horizontal plus vertical strip means
    (``window``-long average pools, UNetFormer's cross-shaped context); the local
    branch is added, and a ``window x window`` separable conv-BN mixes the sum.
    """

    bias_index: Tensor
    """(N, N) index of each window position pair into ``bias_table`` (a buffer)."""

    def __init__(self, dim: int, heads: int = 8, window: int = 8) -> None:
        super().__init__()
        heads = math.gcd(heads, dim)
        self.heads = heads
        self.window = window
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.local3 = conv_bn(dim, dim, 3)
        self.local1 = conv_bn(dim, dim, 1)
        pad = window // 2 - 1
        self.pool_x = nn.AvgPool2d((window, 1), stride=1, padding=(pad, 0))
        self.pool_y = nn.AvgPool2d((1, window), stride=1, padding=(0, pad))
        self.proj = separable_conv_bn(dim, dim, window)
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
        local = self.local1(x) + self.local3(x)  # (B, C, h, w)
        xp = _pad_reflect(x, (-w) % ws, (-h) % ws)
        hp, wp = xp.shape[-2:]
        qkv = self.qkv(xp)  # (B, 3C, hp, wp)
        qkv = qkv.view(b, 3, nh, c // nh, hp // ws, ws, wp // ws, ws)
        qkv = qkv.permute(1, 0, 4, 6, 2, 5, 7, 3).reshape(3, -1, nh, ws * ws, c // nh)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B*nW, nh, ws*ws, hd)
        bias = self.bias_table[self.bias_index].permute(2, 0, 1).to(q.dtype)  # (nh, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B*nW, nh, N, hd)
        out = out.view(b, hp // ws, wp // ws, nh, ws, ws, c // nh)
        out = out.permute(0, 3, 6, 1, 4, 2, 5).reshape(b, c, hp, wp)[:, :, :h, :w]
        ctx = self.pool_x(_pad_reflect(out, 0, 1)) + self.pool_y(_pad_reflect(out, 1, 0))
        mixed = self.proj(_pad_reflect(ctx[:, :, :h, :w] + local, 1, 1))
        return mixed[:, :, :h, :w]  # (B, C, h, w)


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


def conv_bn_relu6(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    """Conv (same padding, no bias) -> BatchNorm -> ReLU6 (UNetFormer's ConvBNReLU)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()
    )


class WeightedFusion(nn.Module):
    """Upsample the decoder map and add the 1x1-projected skip with learned normalised weights."""

    def __init__(self, skip_channels: int, dim: int) -> None:
        super().__init__()
        self.pre = nn.Conv2d(skip_channels, dim, 1, bias=False)
        self.weights = nn.Parameter(torch.ones(2))
        self.post = conv_bn_relu6(dim, dim, 3)

    def fuse(self, x: Tensor, skip: Tensor) -> Tensor:
        """``w0 * pre(skip) + w1 * up(x)`` with ``w = relu(weights) / (sum + 1e-8)``."""
        w = F.relu(self.weights)
        w = w / (w.sum() + 1e-8)
        return w[0] * self.pre(skip) + w[1] * _up(x, skip)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """The decoder map fused with the skip, at the skip's size ``(B, D, h, w)``."""
        return self.post(self.fuse(x, skip))


class FeatureRefinementHead(WeightedFusion):
    """UNetFormer's FRH at stride 1/4: weighted fusion, then spatial + channel attention paths."""

    def __init__(self, skip_channels: int, dim: int) -> None:
        super().__init__(skip_channels, dim)
        self.spatial = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, groups=dim), nn.Sigmoid())
        hidden = max(dim // 16, 1)
        self.channel = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(dim, hidden, 1, bias=False),
            nn.ReLU6(),
            nn.Conv2d(hidden, dim, 1, bias=False),
            nn.Sigmoid(),
        )
        self.shortcut = conv_bn(dim, dim, 1)
        self.proj = separable_conv_bn(dim, dim, 3)
        self.act = nn.ReLU6()

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """The refined finest-stride map ``(B, D, h_0, w_0)``."""
        x = self.post(self.fuse(x, skip))  # (B, D, h0, w0)
        refined = self.spatial(x) * x + self.channel(x) * x
        return self.act(self.proj(refined) + self.shortcut(x))


class UNetFormerDecoder(nn.Module):
    """UNetFormer's decoder: GLT blocks at strides 32/16/8, weighted skip fusion, FRH at 4.

    As the reference (GeoSeg's ``UNetFormer.py``) in eval mode; its training-only
    auxiliary head is left out (aerialct trains no auxiliary loss).
    """

    def __init__(
        self,
        channels: list[int],
        num_classes: int,
        dim: int = 64,
        window: int = 8,
        dropout: float = 0.05,
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
            conv_bn_relu6(dim, dim, 3),
            nn.Dropout2d(dropout),
            nn.Conv2d(dim, num_classes, 1, bias=False),
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

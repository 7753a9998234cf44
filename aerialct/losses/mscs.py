"""MS/CS: multi-scale and cross-scale supervised contrastive losses (DESIGN section 5).

At each encoder scale the labels are downsampled by nearest neighbour (every
r-th pixel), a class-balanced set of anchor pixels is drawn, their features go
through a projector (1x1 conv -> ReLU -> BN -> 1x1 conv to 256, L2-normalised),
and a supervised InfoNCE loss is computed stably with log-sum-exp.

    L(i) = mean_{p in P(i)} -log( e^{z_i.z_p/t} / (e^{z_i.z_p/t} + sum_{n in N(i)} e^{z_i.z_n/t}) )
         = mean_{p in P(i)} softplus( LSE_{n in N(i)}(z_i.z_n/t) - z_i.z_p/t )

Multi-scale: ``L_ms = sum_s w_s L_s`` (w = 1, 0.7, 0.4, 0.1 for strides 4..32).
Cross-scale: anchors of one scale against the samples of another
(``(4, 32)``, ``(4, 16)``), gradients into both; ``L_cs`` sums the pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aerialct.errors import ConfigError


def downsample_labels(mask: Tensor, reduction: int) -> Tensor:
    """Nearest label downsampling: every ``reduction``-th pixel, starting at 0.

    Shape:
        mask ``(B, H, W)``; returns ``(B, ceil(H / r), ceil(W / r))``.
    """
    return mask[:, ::reduction, ::reduction]


@dataclass
class BalancedSample:
    """Pixels drawn by :func:`balanced_sample`."""

    index: Tensor
    """(S,) flat indices into ``labels.view(-1)`` (image-major)."""
    label: Tensor
    """(S,) class of each sample."""
    k: int
    """Samples per (image, class) pair."""
    pairs: int
    """Number of (image, class) pairs with at least ``min_pixels`` pixels."""


def balanced_sample(
    labels: Tensor,
    num_classes: int,
    ignore_index: int = 255,
    min_pixels: int = 5,
    max_k: int = 2500,
    max_total: int = 10000,
    generator: torch.Generator | None = None,
) -> BalancedSample:
    """Draw K pixels (without replacement) from every (image, class) pair with >= min_pixels.

    ``K = min(smallest such count, max_k, max_total // pairs)`` is chosen on the fly.
    Vectorised: a random key within each (image, class) group, one sort, a rank cut.

    Shape:
        labels ``(B, h, w)`` int64; returns :class:`BalancedSample`.
    """
    b = labels.shape[0]
    flat = labels.reshape(-1)  # (B*h*w,)
    per_image = flat.numel() // max(b, 1)
    valid = (flat != ignore_index) & (flat >= 0) & (flat < num_classes)
    image = torch.arange(flat.numel(), device=flat.device) // max(per_image, 1)
    group = torch.where(valid, image * num_classes + flat, b * num_classes)  # (N,)
    counts = torch.bincount(group, minlength=b * num_classes + 1)[:-1]  # (B*K,)
    eligible = counts >= min_pixels  # (B*K,)
    pairs = int(eligible.sum())
    empty = flat.new_zeros(0)
    if pairs == 0:
        return BalancedSample(empty, empty, 0, 0)
    k = min(int(counts[eligible].min()), max_k, max_total // pairs)
    if k <= 0:
        return BalancedSample(empty, empty, 0, pairs)
    noise = torch.rand(flat.numel(), device=flat.device, generator=generator)  # (N,)
    order = torch.argsort(group.double() + noise.double())  # grouped, random within group
    g_sorted = group[order]
    starts = torch.cumsum(counts, 0) - counts  # (B*K,)
    rank = (
        torch.arange(order.numel(), device=flat.device)
        - torch.cat([starts, starts.new_tensor([int(counts.sum())])])[g_sorted]
    )
    ok = g_sorted < b * num_classes
    ok &= rank < k
    ok &= torch.cat([eligible, eligible.new_zeros(1)])[g_sorted]
    index = order[ok]  # (pairs * K,)
    return BalancedSample(index, flat[index], k, pairs)


def supervised_contrastive_loss(
    anchors: Tensor,
    anchor_labels: Tensor,
    contrast: Tensor | None = None,
    contrast_labels: Tensor | None = None,
    temperature: float = 0.1,
) -> Tensor | None:
    """Supervised InfoNCE, stable via log-sum-exp (formula in the module docstring).

    With ``contrast`` None the anchors are contrasted with each other (self pairs
    excluded). Anchors without a positive or without a negative are left out; if
    none remain the result is None.

    Shape:
        anchors ``(A, D)``, anchor_labels ``(A,)``, contrast ``(M, D)``,
        contrast_labels ``(M,)``; returns a scalar or None.
    """
    same = contrast is None
    if same:
        contrast, contrast_labels = anchors, anchor_labels
    assert contrast is not None and contrast_labels is not None
    eq = anchor_labels[:, None] == contrast_labels[None, :]  # (A, M)
    pos = eq.clone()
    if same:
        pos.fill_diagonal_(False)
    neg = ~eq  # (A, M)
    keep = pos.any(1) & neg.any(1)  # (A,)
    if not bool(keep.any()):
        return None
    a, pos, neg = anchors[keep], pos[keep], neg[keep]
    sim = a @ contrast.T / temperature  # (A', M)
    neg_lse = torch.logsumexp(sim.masked_fill(~neg, float("-inf")), dim=1)  # (A',)
    per_pair = F.softplus(neg_lse[:, None] - sim)  # (A', M)
    per_anchor = (per_pair * pos).sum(1) / pos.sum(1)  # (A',)
    return per_anchor.mean()


class Projector(nn.Module):
    """``Conv1x1 -> ReLU -> BN -> Conv1x1`` to ``dim``, L2-normalised.

    Applied to the sampled pixels only (a 1x1 conv on a pixel is a linear layer),
    so BN statistics come from the sampled pixels of the batch.
    """

    def __init__(self, in_dim: int, dim: int = 256, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or in_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(hidden),
            nn.Linear(hidden, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net(x), dim=-1)  # (S, dim)


class MultiScaleContrastLoss(nn.Module):
    """MS and CS losses over the backbone stages, with one projector per stage.

    ``forward`` returns ``(L_ms, L_cs)``; either is None when no anchor had both a
    positive and a negative (the task turns that into a zero with a graph).
    """

    def __init__(
        self,
        channels: list[int],
        reductions: list[int],
        num_classes: int,
        *,
        ignore_index: int = 255,
        dim: int = 256,
        temperature: float = 0.1,
        ms_weights: tuple[float, ...] = (1.0, 0.7, 0.4, 0.1),
        cs_pairs: tuple[tuple[int, int], ...] = ((4, 32), (4, 16)),
        min_pixels: int = 5,
        max_k: int = 2500,
        max_total: int = 10000,
    ) -> None:
        super().__init__()
        if len(ms_weights) > len(channels):
            raise ConfigError(
                f"loss.ms_weights has {len(ms_weights)} values, the backbone has "
                f"{len(channels)} stages; give one weight per stage (stride {reductions})"
            )
        self.cs_stage_pairs: list[tuple[int, int]] = []
        for a, b in cs_pairs:
            if a not in reductions or b not in reductions:
                raise ConfigError(
                    f"loss.cs_pairs ({a}, {b}): strides must be among the backbone's "
                    f"reductions {reductions}"
                )
            self.cs_stage_pairs.append((reductions.index(a), reductions.index(b)))
        self.ms_weights = tuple(ms_weights)
        used = {i for i, w in enumerate(ms_weights) if w} | {
            s for pair in self.cs_stage_pairs for s in pair
        }
        self.stages = sorted(used)
        self.projectors = nn.ModuleDict({str(s): Projector(channels[s], dim) for s in self.stages})
        self.reductions = list(reductions)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.temperature = temperature
        self.min_pixels = min_pixels
        self.max_k = max_k
        self.max_total = max_total

    def embed_stage(
        self, s: int, feat: Tensor, mask: Tensor, gather=None, generator=None
    ) -> tuple[Tensor, Tensor]:
        """Sample and project the anchors of stage ``s``: ``(S, dim)`` embeddings, ``(S,)`` labels."""
        r = self.reductions[s]
        labels = downsample_labels(mask, r)  # (B, h, w)
        if labels.shape[-2:] != feat.shape[-2:]:
            raise ValueError(
                f"stage {s}: feature map {tuple(feat.shape[-2:])} does not match labels "
                f"downsampled by {r} {tuple(labels.shape[-2:])}"
            )
        smp = balanced_sample(
            labels,
            self.num_classes,
            self.ignore_index,
            self.min_pixels,
            self.max_k,
            self.max_total,
            generator,
        )
        tokens = feat.float().permute(0, 2, 3, 1).reshape(-1, feat.shape[1])  # (B*h*w, C)
        x = tokens[smp.index]  # (S, C)
        proj = self.projectors[str(s)]
        if x.shape[0] >= 2 or (x.shape[0] == 1 and not proj.training):
            emb = proj(x)  # (S, dim)
        else:  # BatchNorm cannot train on < 2 samples; nothing to contrast anyway
            emb = x.new_zeros(x.shape[0], proj.net[-1].out_features) + 0 * x.sum()
        labels_s = smp.label
        if gather is not None:
            emb, labels_s = gather(emb), gather(labels_s)
        return emb, labels_s

    def forward(
        self, feats: list[Tensor], mask: Tensor, gather=None, generator=None
    ) -> tuple[Tensor | None, Tensor | None]:
        emb = {s: self.embed_stage(s, feats[s], mask, gather, generator) for s in self.stages}
        ms_terms = []
        for s, w in enumerate(self.ms_weights):
            if not w:
                continue
            z, y = emb[s]
            loss = supervised_contrastive_loss(z, y, temperature=self.temperature)
            if loss is not None:
                ms_terms.append(w * loss)
        cs_terms = []
        for a, b in self.cs_stage_pairs:
            (za, ya), (zb, yb) = emb[a], emb[b]
            loss = supervised_contrastive_loss(za, ya, zb, yb, temperature=self.temperature)
            if loss is not None:
                cs_terms.append(loss)
        ms = torch.stack(ms_terms).sum() if ms_terms else None
        cs = torch.stack(cs_terms).sum() if cs_terms else None
        return ms, cs

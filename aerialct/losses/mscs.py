"""MS/CS: multi-scale and cross-scale supervised contrastive losses
(README, "Models, and the two contrastive schemes").

At each scale (encoder stages, or the decoder's multi-scale maps) the labels are
downsampled by nearest neighbour (every r-th pixel), a class-balanced set of anchor
pixels is drawn, their features go through a projector (``layers`` x [1x1 conv ->
ReLU -> BN], then a 1x1 conv to 256, L2-normalised), and a supervised InfoNCE loss
is computed stably with log-sum-exp. For an anchor set A and a contrast set C::

    L(i) = mean_{p in P(i)} -log( e^{z_i.z_p/t} / (e^{z_i.z_p/t} + sum_{n in N(i)} e^{z_i.z_n/t}) )
         = mean_{p in P(i)} softplus( LSE_{n in N(i)}(z_i.z_n/t) - z_i.z_p/t )
    L(A, C) = 1 / |A| * sum_{i in A} L(i)

with ``P(i)`` the same-class members of C (not i) and ``N(i)`` the others. An anchor
with no positive or no negative adds 0 and *stays in the denominator* (eq. 1 of the
paper, and the released code): in the cross-scale term a fine-scale anchor whose
class has no sample at the coarse scale counts as 0.

Multi-scale: ``L_ms = sum_s w_s L(A_s, A_s)`` (w = 1, 0.7, 0.4, 0.1 for strides 4..32).
Cross-scale: ``L_cs = L(A_4, A_32) + L(A_4, A_16)``, gradients into both scales.

Modes (``loss.mscs_mode``): ``paper`` (default) draws K anchors *per class*, split
evenly among the images containing it, and uses the paper's two-layer projector;
``released`` draws K anchors per (image, class) pair and uses the released configs'
one-layer projector. ``loss.mscs_anchors`` and ``loss.mscs_proj_layers`` override
either choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

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


AnchorRule = Literal["per-class", "per-image-class"]
ANCHOR_RULES = ("per-class", "per-image-class")


@dataclass
class BalancedSample:
    """Pixels drawn by :func:`balanced_sample` (static shape: ``S = min(max_total, N)`` slots)."""

    index: Tensor
    """(S,) flat indices into ``labels.view(-1)`` (image-major); meaningful where ``valid``."""
    label: Tensor
    """(S,) class of each slot."""
    valid: Tensor
    """(S,) bool: the slot holds a drawn pixel (``pairs * k`` of them)."""
    k: Tensor
    """() samples per group (a class, or an (image, class) pair)."""
    pairs: Tensor
    """() number of groups (classes, or (image, class) pairs) with at least ``min_pixels``."""


def balanced_sample(
    labels: Tensor,
    num_classes: int,
    ignore_index: int = 255,
    min_pixels: int = 5,
    max_k: int = 2500,
    max_total: int = 10000,
    generator: torch.Generator | None = None,
    rule: AnchorRule = "per-class",
) -> BalancedSample:
    """Draw a class-balanced set of anchor pixels (without replacement).

    ``per-class`` (the paper): every class with at least ``min_pixels`` pixels in the
    batch gets ``K = min(smallest such class count, max_k, max_total // classes)``
    anchors, split evenly among the images that contain it (round robin over the
    images in random order; an image with fewer pixels than its share gives them
    all and the others make up the rest).
    ``per-image-class`` (the released code): every (image, class) pair with at least
    ``min_pixels`` pixels gets ``K = min(smallest such count, max_k, max_total // pairs)``.

    Vectorised and free of host syncs: a random key within each (image, class)
    group, one sort, a rank cut (per-class: a second sort by (class, rank)), then
    one ``topk`` packs the drawn pixels into ``min(max_total, N)`` slots
    (``groups * K <= max_total`` always fits).

    Shape:
        labels ``(B, h, w)`` int64; returns :class:`BalancedSample`.
    """
    if rule not in ANCHOR_RULES:
        raise ConfigError(f"loss.mscs_anchors {rule!r} is not one of {', '.join(ANCHOR_RULES)}")
    b = labels.shape[0]
    dev = labels.device
    flat = labels.reshape(-1)  # (N,)
    n = flat.numel()
    nk = b * num_classes
    valid = (flat != ignore_index) & (flat >= 0) & (flat < num_classes)
    image = torch.arange(n, device=dev) // max(n // max(b, 1), 1)
    group = torch.where(valid, image * num_classes + flat, nk)  # (N,), nk = not drawable
    counts = torch.zeros(nk + 1, dtype=torch.long, device=dev)
    counts.scatter_add_(0, group, torch.ones_like(group))  # (B*K + 1,)
    noise = torch.rand(n, device=dev, generator=generator, dtype=torch.float64)  # (N,)
    order = torch.argsort(group.double() + noise)  # grouped, random within each group
    g_sorted = group[order]
    starts = torch.cumsum(counts, 0) - counts  # (B*K + 1,)
    rank = torch.arange(n, device=dev) - starts[g_sorted]  # (N,) rank within (image, class)
    if rule == "per-image-class":
        eligible = counts >= min_pixels
        eligible[nk] = False
        pairs = eligible.sum()
        smallest = torch.where(eligible, counts, n + 1).min()
        k = torch.clamp(torch.minimum(smallest, max_total // pairs.clamp(min=1)), max=max_k)
        k = torch.where(pairs > 0, k, 0)
        chosen = eligible[g_sorted] & (rank < k)  # (N,) in sorted order
    else:
        per_class = counts[:nk].view(b, num_classes).sum(0)  # (K,)
        eligible_c = per_class >= min_pixels  # (K,)
        pairs = eligible_c.sum()
        smallest = torch.where(eligible_c, per_class, n + 1).min()
        k = torch.clamp(torch.minimum(smallest, max_total // pairs.clamp(min=1)), max=max_k)
        k = torch.where(pairs > 0, k, 0)
        cls = torch.where(g_sorted < nk, g_sorted % num_classes, num_classes)  # (N,)
        # round robin over the images: rank r of every image before rank r + 1 of any,
        # images in a random order (one key per (image, class) group)
        tie = torch.rand(nk + 1, device=dev, generator=generator, dtype=torch.float64)
        key = cls.double() * (n + 1) + rank.double() + tie[g_sorted]
        order2 = torch.argsort(key)  # (N,) by class, then round robin
        c_counts = torch.cat([per_class, (g_sorted == nk).sum()[None]])  # (K + 1,)
        c_starts = torch.cumsum(c_counts, 0) - c_counts
        c_rank = torch.empty_like(rank)
        c_rank[order2] = torch.arange(n, device=dev) - c_starts[cls[order2]]
        ok_c = torch.cat([eligible_c, eligible_c.new_zeros(1)])  # (K + 1,)
        chosen = ok_c[cls] & (c_rank < k)  # (N,) in sorted order
    slots = min(max_total, n)
    key = chosen.float() + 0.5 * torch.rand(n, device=dev, generator=generator)
    top = key.topk(slots).indices  # (S,) every chosen pixel first
    index = order[top]
    return BalancedSample(index, flat[index], chosen[top], k, pairs)


_FILL = -1e9  # a finite "minus infinity": keeps logsumexp NaN-free on rows with no negative


_TINY = 1e-30


class _SupCon(torch.autograd.Function):
    """Chunked supervised InfoNCE with an analytic backward; no (A, M) tensor outlives a chunk.

    Labels carry validity: invalid anchors are -1, invalid contrast rows -2, classes >= 0.
    With ``m_i`` the row maximum of ``s_ij = z_i.z_j / t`` and ``E_ij = exp(s_ij - m_i)``
    (so the log-sum-exp is taken relative to the maximum and never overflows), the
    negatives' sum ``NS_i = sum_n E_in`` and the class sums ``E @ Y`` (Y = one-hot
    labels of the contrast set) come from one matrix product, and

        L_i = mean_p softplus(lse_i - s_ip) = mean_p [ log(E_ip + NS_i) - (s_ip - m_i) ]

    where ``sum_p log(E_ip + NS_i)`` is a second product with Y and ``sum_p s_ip`` is
    ``z_i . (sum of class-mates) / t``. Backward: ``dL_i/ds_ip = -NS_i / (E_ip + NS_i) / |P_i|``
    and ``dL_i/ds_in = (sum_p NS_i / (E_ip + NS_i)) / |P_i| * E_in / NS_i``.
    """

    @staticmethod
    def forward(ctx, a, c, a_lab, c_lab, num_classes, same, temperature, step):  # type: ignore[override]
        """The mean SupCon loss over anchors ``a`` against contrast set ``c`` (see the class)."""
        k = num_classes
        c_ok = c_lab >= 0
        cols = (k + 1 + 7) // 8 * 8  # pad the one-hot to 8 columns: aligned, faster GEMMs
        y = F.one_hot(torch.where(c_ok, c_lab, k), cols).to(a.dtype)  # (M, cols)
        y[:, k] = c_ok.to(a.dtype)  # column k: every valid row
        class_n = y.sum(0)  # (cols,) valid contrast rows per class, total in column k
        class_z = y[:, :k].T @ c  # (K, D) sum of each class's contrast embeddings
        a_ok = a_lab >= 0
        lab = a_lab.clamp(min=0)[:, None]  # (A, 1)
        a_s = a / temperature  # (A, D)
        n_all = a.shape[0]
        m_all = a.new_empty(n_all)
        ns_all = a.new_empty(n_all)
        t_all = a.new_empty(n_all)
        for s in range(0, n_all, step):
            e = min(s + step, n_all)
            sim = a_s[s:e] @ c.T  # (n, M)
            m = sim.amax(1)  # (n,)
            ex = sim.sub_(m[:, None]).exp_()  # E, in place (n, M)
            sums = ex @ y  # (n, K+1)
            ns = sums[:, k] - sums.gather(1, lab[s:e])[:, 0]  # (n,) negatives' sum
            t_sum = (ex.add_(ns[:, None] + _TINY).log_() @ y).gather(1, lab[s:e])[:, 0]
            m_all[s:e], ns_all[s:e], t_all[s:e] = m, ns, t_sum
        npos = class_n[lab[:, 0]]  # (A,) same-class valid rows (self included if same)
        s_sum = (a_s * class_z[lab[:, 0]]).sum(1)  # (A,) sum_p s_ip (self included if same)
        if same:
            self_s = (a_s * a).sum(1)  # (A,)
            self_t = torch.log(torch.exp(self_s - m_all) + ns_all + _TINY)
            npos = npos - a_ok.to(a.dtype)
            s_sum = s_sum - self_s * a_ok
            t_all = t_all - self_t * a_ok
        nneg = class_n[k] - class_n[lab[:, 0]]  # (A,)
        has = a_ok & (npos > 0) & (nneg > 0)
        per = (t_all - (s_sum - npos * m_all)) / npos.clamp(min=1)  # (A,)
        # every valid anchor counts; one without a positive or a negative adds 0 (eq. 1)
        count = a_ok.sum().clamp(min=1)
        ctx.save_for_backward(a_s, c, a_lab, c_lab, y, m_all, ns_all, npos, has, count)
        ctx.same, ctx.temperature, ctx.step, ctx.k = same, temperature, step, k
        return torch.where(has, per, 0).sum() / count

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        """Gradients for ``a`` and ``c`` from the sums kept by ``forward`` (no autograd graph)."""
        a_s, c, a_lab, c_lab, y, m_all, ns_all, npos, has, count = ctx.saved_tensors
        t, step = ctx.temperature, ctx.step
        scale = torch.where(has, grad_out / count / npos.clamp(min=1), 0)[:, None]  # (A, 1)
        c_ok = (c_lab >= 0).to(c.dtype)[:, None]  # (M, 1)
        c_masked = c * c_ok  # invalid contrast rows get no gradient and give none
        lab = a_lab.clamp(min=0)[:, None]
        ga = torch.empty_like(a_s)
        gc = torch.zeros_like(c)
        for s in range(0, a_s.shape[0], step):
            e = min(s + step, a_s.shape[0])
            a_chunk = a_s[s:e]
            ns = ns_all[s:e, None]  # (n, 1)
            ex = torch.addmm(-m_all[s:e, None], a_chunk, c.T).exp_()  # E (n, M)
            r = torch.add(ex, ns + _TINY).reciprocal_().mul_(-ns)  # -sigmoid(lse - s)
            r_sum = -(r @ y).gather(1, lab[s:e])  # (n, 1) over class-mates (+ self)
            if ctx.same:
                rows = torch.arange(e - s, device=ex.device)
                r_sum = r_sum + (r[rows, rows + s] * (a_lab[s:e] >= 0))[:, None]
            alpha = torch.where(ns > 0, r_sum / ns.clamp(min=_TINY), 0)  # (n, 1)
            eq = a_lab[s:e, None] == c_lab[None, :]  # (n, M) class-mates
            g = torch.where(eq, r, ex.mul_(alpha), out=ex)  # dL/dsim up to the row scale
            if ctx.same:
                g[rows, rows + s] = 0
            sc = scale[s:e]
            ga[s:e] = (g @ c_masked) * (sc / t)
            gc.addmm_(g.T, a_chunk * sc)
        gc.mul_(c_ok)
        return ga, gc, None, None, None, None, None, None


def supervised_contrastive_loss(
    anchors: Tensor,
    anchor_labels: Tensor,
    contrast: Tensor | None = None,
    contrast_labels: Tensor | None = None,
    temperature: float = 0.1,
    anchor_valid: Tensor | None = None,
    contrast_valid: Tensor | None = None,
    chunk_elements: int = 1 << 25,
    num_classes: int | None = None,
) -> Tensor:
    """Supervised InfoNCE ``L(A, C)``, stable via log-sum-exp (module docstring).

    With ``contrast`` None the anchors are contrasted with each other (self pairs
    excluded). Invalid rows take no part; an anchor without a positive or without a
    negative adds 0 and still counts in the mean over the valid anchors; with no
    valid anchor the result is 0 (still on the graph).
    Anchors are processed in chunks of at most ``chunk_elements`` similarities and
    the backward pass recomputes them, so memory stays O(chunk), not O(A * M).

    Shape:
        anchors ``(A, D)``, anchor_labels ``(A,)``, contrast ``(M, D)``,
        contrast_labels ``(M,)``, valid masks ``(A,)`` / ``(M,)`` bool; returns a scalar.
    """
    same = contrast is None
    if same:
        contrast, contrast_labels, contrast_valid = anchors, anchor_labels, anchor_valid
    assert contrast is not None and contrast_labels is not None
    if anchor_valid is None:
        anchor_valid = torch.ones_like(anchor_labels, dtype=torch.bool)
    if contrast_valid is None:
        contrast_valid = torch.ones_like(contrast_labels, dtype=torch.bool)
    step = max(1, chunk_elements // max(contrast.shape[0], 1))
    a_lab = torch.where(anchor_valid, anchor_labels, -1)  # labels are >= 0
    c_lab = torch.where(contrast_valid, contrast_labels, -2)
    if num_classes is None:  # one host sync; the loss modules pass it
        num_classes = int(max(int(anchor_labels.max()), int(contrast_labels.max()))) + 1
    c = anchors if same else contrast
    return _SupCon.apply(anchors, c, a_lab, c_lab, num_classes, same, temperature, step)


class Projector(nn.Module):
    """``layers`` x [Conv1x1 -> ReLU -> BN], then a Conv1x1 (linear) to ``dim``, L2-normalised.

    The paper's projector has ``layers=2``; the released configs use one. The hidden
    layers run on the whole feature map (BatchNorm statistics over every pixel of the
    batch, as a conv on the map has them); the last 1x1 conv is a linear layer
    applied to the sampled pixels only.
    """

    def __init__(
        self, in_dim: int, dim: int = 256, hidden: int | None = None, layers: int = 2
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ConfigError(f"loss.mscs_proj_layers {layers} must be at least 1")
        hidden = hidden or in_dim
        blocks: list[nn.Module] = []
        width = in_dim
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.BatchNorm1d(hidden)]
            width = hidden
        self.pre = nn.Sequential(*blocks)
        self.out = nn.Linear(hidden, dim)

    @property
    def layers(self) -> int:
        """Linear-ReLU-BN blocks (1x1 convs on the pixels) before the last linear layer."""
        return len(self.pre) // 3

    def forward(self, tokens: Tensor, index: Tensor | None = None) -> Tensor:
        """Project tokens ``(N, C)`` (rows ``index`` only when given) to L2-normalised ``(S, dim)``."""
        h = self.pre(tokens)  # (N, hidden)
        if index is not None:
            h = h[index]  # (S, hidden)
        return F.normalize(self.out(h), dim=-1)  # (S, dim)

    def forward_without_norm(self, tokens: Tensor) -> Tensor:
        """The projection with the BatchNorm layers skipped (for a one-pixel map)."""
        h = tokens
        for m in self.pre:
            if not isinstance(m, nn.BatchNorm1d):
                h = m(h)
        return F.normalize(self.out(h), dim=-1)


class MultiScaleContrastLoss(nn.Module):
    """MS and CS losses over the scales of a feature pyramid, with one projector per scale.

    ``forward`` returns ``(L_ms, L_cs)``, each 0 (on the graph) when no anchor had
    both a positive and a negative. Static shapes, no host syncs. Computed in the
    dtype of the features (and projectors).
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
        anchors: AnchorRule = "per-class",
        proj_layers: int = 2,
    ) -> None:
        super().__init__()
        if anchors not in ANCHOR_RULES:
            raise ConfigError(
                f"loss.mscs_anchors {anchors!r} is not one of {', '.join(ANCHOR_RULES)}"
            )
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
        self.projectors = nn.ModuleDict(
            {str(s): Projector(channels[s], dim, layers=proj_layers) for s in self.stages}
        )
        self.anchors = anchors
        self.reductions = list(reductions)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.temperature = temperature
        self.min_pixels = min_pixels
        self.max_k = max_k
        self.max_total = max_total

    def embed_stage(
        self, s: int, feat: Tensor, mask: Tensor, gather=None, generator=None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Sample and project the anchors of stage ``s``.

        Returns ``(S, dim)`` embeddings, ``(S,)`` labels and ``(S,)`` validity.
        """
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
            self.anchors,
        )
        tokens = feat.permute(0, 2, 3, 1).reshape(-1, feat.shape[1])  # (B*h*w, C)
        proj = cast(Projector, self.projectors[str(s)])
        if tokens.shape[0] < 2 and proj.training:  # BatchNorm cannot train on one pixel
            emb = proj.forward_without_norm(tokens[smp.index])
            valid = torch.zeros_like(smp.valid)
        else:
            emb, valid = proj(tokens, smp.index), smp.valid  # (S, dim), (S,)
        labels_s = smp.label
        if gather is not None:
            emb, labels_s = gather(emb), gather(labels_s)
            valid = gather(valid.to(torch.uint8)).bool()
        return emb, labels_s, valid

    def forward(
        self, feats: list[Tensor], mask: Tensor, gather=None, generator=None
    ) -> tuple[Tensor, Tensor]:
        """(L_ms, L_cs) of the feature maps ``[(B, C_s, H/r_s, W/r_s)]`` against ``mask`` ``(B, H, W)``."""
        emb = {s: self.embed_stage(s, feats[s], mask, gather, generator) for s in self.stages}
        t = self.temperature
        dtype = next(iter(emb.values()))[0].dtype if emb else feats[0].dtype
        ms = feats[0].new_zeros((), dtype=dtype)
        for s, w in enumerate(self.ms_weights):
            if w:
                z, y, ok = emb[s]
                ms = ms + w * supervised_contrastive_loss(
                    z, y, temperature=t, anchor_valid=ok, num_classes=self.num_classes
                )
        cs = feats[0].new_zeros((), dtype=dtype)
        for a, b in self.cs_stage_pairs:
            (za, ya, oka), (zb, yb, okb) = emb[a], emb[b]
            cs = cs + supervised_contrastive_loss(
                za, ya, zb, yb, t, oka, okb, num_classes=self.num_classes
            )
        # keep every projector on the graph even when a scale contributed nothing
        anchor = sum(e[0].sum() * 0.0 for e in emb.values())
        return ms + anchor, cs + anchor

"""CT: patch contrastive learning on the encoder's innate patches
(README, "Models, and the two contrastive schemes").

Two modes (``loss.ct_mode``): ``paper`` (default) follows the paper and, where it
is silent, the choices stated below; ``released`` reproduces the authors' released
code, quirks included. Closed forms, with ``cos`` the cosine of a pair,
``eps`` the label smoothing, ``hi = 1 - eps / 2``, ``lo = eps / 2``:

paper
    Blocks: positive when every *labelled* pixel is ``c`` (ignore pixels allowed),
    negative when no pixel is ``c`` and at least one is labelled; all-ignore and
    mixed blocks are neither. A (stage, class) group needs at least ``min_samples``
    positives and negatives. Positive pairs ``(p_i, p_{m+i})``, ``m = P // 2``: keep
    the ``max(1, floor(keep * m))`` with the lowest cos; negative pairs
    ``(p_k, n_k)``, ``k < min(P, M)``: keep the ``max(1, floor(keep * n))`` with the
    highest cos. CL with ``s = (cos + 1) / 2``::

        L_g = 1 / (|Pk| + |Nk|) * ( sum_{Pk} -[hi log s + lo log(1 - s)]
                                  + sum_{Nk} -[lo log s + hi log(1 - s)] )

    one mean over *all* kept pairs (so negatives weigh about 2:1 when P ~ M: our
    choice, the paper gives no reduction). InfoNCE: the kept positive pairs are
    (query, key), the kept negatives the negative set, ``mean_q -log softmax``.
    ``L = mean over the valid (stage, class) groups of L_g`` (our choice), and the
    total uses ``L / max(1, L.detach())`` (the 1.0 cap that keeps a gradient).
released
    Blocks: positive when *every* pixel is ``c`` (a ``c`` + ignore block is dropped),
    negative when no pixel is ``c`` (all-ignore blocks are negatives). A group needs
    ``P >= min_samples`` and ``M >= min_samples`` (5). CL: the code's sort runs over a
    length-1 axis, so no mining happens: the *first* ``floor(keep * n)`` negative and
    ``floor(keep * m)`` positive pairs (random order) are kept, and ``[1 - s, s]`` is
    fed to a softmax as logits, i.e. ``q = softmax([1 - s, s])_1 = sigmoid(cos)``::

        L_g = mean_{Nk} -[lo log q + hi log(1 - q)] + [P >= 10] mean_{Pk} -[hi log q + lo log(1 - q)]

    InfoNCE: 0 unless ``P >= 10`` and ``M >= 10``; then ``n = min(P, M, 2000)``
    negative pairs are sorted by cos (descending), the top ``J = floor(keep * n)``
    indices ``T`` give queries ``p_{T[:J//2]}``, keys ``p_{T[J//2 : 2(J//2)]}`` and
    negatives ``n_{T[:J]}``. ``L = sum_g L_g / (stages x classes present in the mask)``
    and the total uses ``clamp(L, 0, 1)`` (no gradient above 1).

In both modes a group's positives and negatives are first drawn at random, at most
``max_samples`` of each (``loss.ct_max_samples``; 0: no limit, as the released code).

At a stage with reduction ``r`` every token covers an ``r x r`` pixel block. For
class ``c`` a block whose labelled pixels are all ``c`` is a *positive*, a block
with no pixel of ``c`` is a *negative*; mixed blocks that contain ``c`` and
all-ignore blocks are discarded. Tokens go through a per-stage projection head
and are L2-normalised; samples are pooled over the batch (and over ranks when a
``gather`` is given). Hard mining keeps the least similar positive pairs and the
most similar negative pairs; the CL loss (BCE on ``s = (cos + 1) / 2``, label
smoothing) or InfoNCE is averaged over stages and classes.

:func:`mine_hard_pairs` and :func:`class_contrast_loss` state the rules for one
(stage, class) and serve as the reference; :class:`PatchContrastLoss` applies them
to all (stage, class) groups at once through :func:`batched_class_losses` (masks,
static shapes, no host syncs). The only Python loop is over stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aerialct.errors import ConfigError


def token_class_counts(
    mask: Tensor, reduction: int, num_classes: int, ignore_index: int = 255
) -> Tensor:
    """Pixels of each class in every ``reduction x reduction`` block, laid out like tokens.

    One scatter-add over the pixels (no one-hot copy of the mask); the last bin
    takes ignore (and any out-of-range) pixels.

    Shape:
        mask ``(B, H, W)`` int64 with H, W multiples of ``reduction``;
        returns ``(B, H / r, W / r, K + 1)`` int32 counts.
    """
    b, h, w = mask.shape
    r = reduction
    if h % r or w % r:
        raise ValueError(f"mask {h}x{w} is not a multiple of the stage reduction {r}")
    hh, ww = h // r, w // r
    dev = mask.device
    k1 = num_classes + 1
    labelled = (mask >= 0) & (mask < num_classes) & (mask != ignore_index)
    cls = torch.where(labelled, mask, num_classes)  # (B, H, W)
    cell = (torch.arange(h, device=dev)[:, None] // r) * ww + torch.arange(w, device=dev) // r
    image = torch.arange(b, device=dev)[:, None, None] * (hh * ww)
    index = (image + cell) * k1 + cls  # (B, H, W) flat index into (B, hh, ww, K+1)
    counts = torch.zeros(b * hh * ww * k1, dtype=torch.int32, device=dev)
    ones = torch.ones(1, dtype=torch.int32, device=dev).expand(index.numel())
    counts.index_add_(0, index.reshape(-1), ones)
    return counts.view(b, hh, ww, k1)


def pool_counts(counts: Tensor, factor: int) -> Tensor:
    """Token counts of a ``factor`` times coarser grid (sum over factor x factor cells).

    Shape:
        counts ``(B, h, w, K + 1)``; returns ``(B, h / f, w / f, K + 1)``.
    """
    b, h, w, k1 = counts.shape
    return counts.view(b, h // factor, factor, w // factor, factor, k1).sum((2, 4))


def labels_from_counts(counts: Tensor) -> tuple[Tensor, Tensor]:
    """Positive / negative blocks per class from per-block class counts (classes last).

    Shape:
        counts ``(..., K)`` (ignore bin excluded); returns ``(pos, neg)`` bool, same shape.
    """
    labelled = counts.sum(-1, keepdim=True)  # (..., 1)
    pos = (counts == labelled) & (labelled > 0)  # (..., K)
    neg = (counts == 0) & (labelled > 0)  # (..., K)
    return pos, neg


def released_labels_from_counts(counts: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Positive / negative blocks by the released code's rule, from counts with the ignore bin.

    Positive: every pixel of the block is ``c`` (ignore pixels make it neither);
    negative: no pixel is ``c`` (all-ignore blocks included).

    Shape:
        counts ``(..., K + 1)`` (last bin: ignore); returns ``(pos, neg)`` ``(..., K)`` bool.
    """
    total = counts.sum(-1, keepdim=True)  # (..., 1) pixels per block
    cls = counts[..., :num_classes]  # (..., K)
    return cls == total, cls == 0


def block_class_counts(mask: Tensor, reduction: int, num_classes: int, ignore_index: int) -> Tensor:
    """Pixels of each class in every block, ignore excluded.

    Shape:
        mask ``(B, H, W)``; returns ``(B, K, H / r, W / r)`` int32.
    """
    counts = token_class_counts(mask, reduction, num_classes, ignore_index)  # (B, h, w, K+1)
    return counts[..., :num_classes].permute(0, 3, 1, 2)


def block_labels(
    mask: Tensor,
    reduction: int,
    num_classes: int,
    ignore_index: int = 255,
    rule: Literal["paper", "released"] = "paper",
) -> tuple[Tensor, Tensor]:
    """Positive and negative blocks per class (``rule``: see the module docstring).

    Shape:
        mask ``(B, H, W)``; returns ``(pos, neg)``, each ``(B, K, H / r, W / r)`` bool.
    """
    counts = token_class_counts(mask, reduction, num_classes, ignore_index)  # (B, h, w, K+1)
    if rule == "released":
        pos, neg = released_labels_from_counts(counts, num_classes)  # (B, h, w, K)
    else:
        pos, neg = labels_from_counts(counts[..., :num_classes])  # (B, h, w, K)
    return pos.permute(0, 3, 1, 2), neg.permute(0, 3, 1, 2)


@dataclass
class HardPairs:
    """Indices of the pairs hard mining keeps (into the positive / negative sample sets)."""

    pos_a: Tensor
    """(Pk,) first element of each kept positive pair (first half of the positives)."""
    pos_b: Tensor
    """(Pk,) second element (second half of the positives)."""
    neg_p: Tensor
    """(Nk,) positive element of each kept negative pair."""
    neg_n: Tensor
    """(Nk,) negative element of each kept negative pair."""
    pos_cos: Tensor
    """(Pk,) cosine similarity of the kept positive pairs."""
    neg_cos: Tensor
    """(Nk,) cosine similarity of the kept negative pairs."""


def _n_keep(n: int, keep_fraction: float) -> int:
    return max(1, int(n * keep_fraction)) if n > 0 else 0


def mine_hard_pairs(pos: Tensor, neg: Tensor, keep_fraction: float = 0.5) -> HardPairs:
    """Pair already-shuffled samples and keep the hardest fraction.

    Positive pairs are ``(pos[i], pos[m + i])`` for ``i < m = P // 2``; the
    ``max(1, floor(keep * m))`` pairs with the *lowest* cosine are kept. Negative
    pairs are ``(pos[k], neg[k])`` for ``k < min(P, M)``; the ``max(1, floor(keep * n))``
    with the *highest* cosine are kept. Embeddings must be L2-normalised.

    Shape:
        pos ``(P, D)``, neg ``(M, D)``; returns :class:`HardPairs` of index vectors.
    """
    m = pos.shape[0] // 2
    n = min(pos.shape[0], neg.shape[0])
    cos_pos = (pos[:m] * pos[m : 2 * m]).sum(-1)  # (m,)
    cos_neg = (pos[:n] * neg[:n]).sum(-1)  # (n,)
    kp = torch.topk(cos_pos, _n_keep(m, keep_fraction), largest=False).indices  # (Pk,)
    kn = torch.topk(cos_neg, _n_keep(n, keep_fraction), largest=True).indices  # (Nk,)
    return HardPairs(
        pos_a=kp, pos_b=kp + m, neg_p=kn, neg_n=kn, pos_cos=cos_pos[kp], neg_cos=cos_neg[kn]
    )


def ct_cl_loss(pos_cos: Tensor, neg_cos: Tensor, smoothing: float = 0.1) -> Tensor:
    """The CL loss: BCE of ``s = (cos + 1) / 2`` against smoothed targets.

    Targets are ``1 - smoothing / 2`` for positive pairs and ``smoothing / 2`` for
    negative pairs (label smoothing over the two outcomes); the mean runs over all
    kept pairs together.

    Shape:
        pos_cos ``(Pk,)``, neg_cos ``(Nk,)``; returns a scalar.
    """
    s = (torch.cat([pos_cos, neg_cos]) + 1) / 2  # (Pk + Nk,)
    target = torch.cat([pos_cos.new_ones(pos_cos.shape), neg_cos.new_zeros(neg_cos.shape)])
    target = target * (1 - smoothing) + smoothing / 2  # (Pk + Nk,)
    eps = 1e-6
    s = s.clamp(eps, 1 - eps)
    return -(target * s.log() + (1 - target) * (1 - s).log()).mean()


def ct_infonce_loss(
    query: Tensor, key: Tensor, negatives: Tensor, temperature: float = 0.1
) -> Tensor:
    """InfoNCE: each query against its positive key and all (hard) negatives.

    ``mean_i -log( e^{q_i.k_i/t} / (e^{q_i.k_i/t} + sum_n e^{q_i.n/t}) )``.

    Shape:
        query ``(Q, D)``, key ``(Q, D)``, negatives ``(N, D)`` (L2-normalised); returns a scalar.
    """
    pos = (query * key).sum(-1, keepdim=True)  # (Q, 1)
    neg = query @ negatives.T  # (Q, N)
    logits = torch.cat([pos, neg], 1) / temperature  # (Q, 1 + N)
    target = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
    return F.cross_entropy(logits, target)


def cap_loss(
    loss: Tensor, cap: float = 1.0, mode: Literal["paper", "released"] = "paper"
) -> Tensor:
    """Bound the CT term by ``cap``.

    ``paper``: rescale, ``loss / max(1, loss / cap)`` (detached): above the cap the
    gradient is scaled down, not zeroed. ``released``: the released code's value
    clamp ``clamp(loss, 0, cap)``, whose gradient is 0 above the cap.
    """
    if mode == "released":
        return loss.clamp(0.0, cap)
    return loss / torch.clamp(loss.detach() / cap, min=1.0)


def class_contrast_loss(
    pos: Tensor,
    neg: Tensor,
    mode: Literal["cl", "infonce"],
    keep_fraction: float = 0.5,
    smoothing: float = 0.1,
    temperature: float = 0.1,
) -> Tensor:
    """CT loss of one (stage, class) from shuffled, L2-normalised positive/negative samples.

    Shape:
        pos ``(P, D)`` with P >= 2, neg ``(M, D)`` with M >= 1; returns a scalar.
    """
    pairs = mine_hard_pairs(pos, neg, keep_fraction)
    if mode == "cl":
        return ct_cl_loss(pairs.pos_cos, pairs.neg_cos, smoothing)
    return ct_infonce_loss(pos[pairs.pos_a], pos[pairs.pos_b], neg[pairs.neg_n], temperature)


class ProjectionHead(nn.Module):
    """Per-stage MLP ``Linear -> ReLU -> Linear`` then L2 normalisation (training only)."""

    def __init__(self, in_dim: int, hidden: int = 128, out_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        """L2-normalised projection ``(N, out_dim)`` of tokens ``(N, in_dim)``."""
        return F.normalize(self.net(x), dim=-1)  # (N, out_dim)


def sample_per_class(
    flags: Tensor, limit: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Draw up to ``limit`` flagged rows per class at random, without replacement.

    Static shapes, no host sync: a random key per (row, class), unflagged rows
    keyed -1, one ``topk`` down the rows. Valid draws come first, in random order.

    Shape:
        flags ``(N, K)`` bool; returns ``index (S, K)`` into the rows and ``valid (S, K)``
        bool, ``S = min(limit, N)`` (``limit <= 0``: S = N).
    """
    n = flags.shape[0]
    s = n if limit <= 0 else min(limit, n)
    keys = torch.rand(flags.shape, device=flags.device, generator=generator)  # (N, K)
    keys = keys.masked_fill(~flags, -1.0)
    vals, index = keys.topk(s, dim=0)  # (S, K)
    return index, vals >= 0


def pack_valid_first(
    emb: Tensor, valid: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Reorder rows per class so valid entries come first, in random order.

    Shape:
        emb ``(S, K, D)``, valid ``(S, K)``; returns the same shapes.
    """
    keys = torch.rand(valid.shape, device=valid.device, generator=generator)
    keys = keys.masked_fill(~valid, -1.0)
    order = keys.argsort(dim=0, descending=True)  # (S, K)
    emb = emb.gather(0, order[..., None].expand_as(emb))
    return emb, valid.gather(0, order)


def batched_class_losses(
    pos: Tensor,
    pos_valid: Tensor,
    neg: Tensor,
    neg_valid: Tensor,
    mode: Literal["cl", "infonce"] = "cl",
    keep_fraction: float = 0.5,
    smoothing: float = 0.1,
    temperature: float = 0.1,
    min_samples: int = 5,
) -> tuple[Tensor, Tensor]:
    """CT loss of every class at once; per class it equals :func:`class_contrast_loss`.

    Samples must be packed valid-first per class (random order among them). The
    pairing and hard mining are those of :func:`mine_hard_pairs`, done for all
    classes with masks instead of Python loops and without host syncs.

    Shape:
        pos ``(S, K, D)``, pos_valid ``(S, K)``, neg ``(T, K, D)``, neg_valid ``(T, K)``;
        returns ``loss (K,)`` (0 where not eligible) and ``eligible (K,)`` bool
        (at least ``min_samples`` positives and negatives).
    """
    s, t = pos.shape[0], neg.shape[0]
    n_pos = pos_valid.sum(0)  # (K,)
    n_neg = neg_valid.sum(0)  # (K,)
    eligible = (n_pos >= max(2, min_samples)) & (n_neg >= min_samples)  # (K,)
    dev = pos.device
    # positive pairs (i, m + i), i < m = P // 2; keep the least similar
    h = max(s // 2, 1)
    m = n_pos // 2  # (K,)
    i = torch.arange(h, device=dev)[:, None]  # (H, 1)
    pair_ok = i < m  # (H, K)
    b_idx = (i + m).clamp(max=s - 1)  # (H, K)
    a = pos[:h]  # (H, K, D)
    b = pos.gather(0, b_idx[..., None].expand(h, *pos.shape[1:]))  # (H, K, D)
    cos_pos = (a * b).sum(-1)  # (H, K)
    keep_p = torch.where(m > 0, (m * keep_fraction).floor().long().clamp(min=1), 0)  # (K,)
    order_p = cos_pos.masked_fill(~pair_ok, float("inf")).argsort(0)  # (H, K) ascending
    qmax = max(1, min(h, int(h * keep_fraction) + 1))
    order_p = order_p[:qmax]  # (Q, K)
    kept_p = torch.arange(qmax, device=dev)[:, None] < keep_p  # (Q, K)
    cos_p = cos_pos.gather(0, order_p)  # (Q, K)
    # negative pairs (pos_k, neg_k), k < n = min(P, M); keep the most similar
    u = max(min(s, t), 1)
    nn_ = torch.minimum(n_pos, n_neg)  # (K,)
    neg_ok = torch.arange(u, device=dev)[:, None] < nn_  # (U, K)
    cos_neg = (pos[:u] * neg[:u]).sum(-1)  # (U, K)
    keep_n = torch.where(nn_ > 0, (nn_ * keep_fraction).floor().long().clamp(min=1), 0)
    order_n = cos_neg.masked_fill(~neg_ok, float("-inf")).argsort(0, descending=True)
    nmax = max(1, min(u, int(u * keep_fraction) + 1))
    order_n = order_n[:nmax]  # (Nk, K)
    kept_n = torch.arange(nmax, device=dev)[:, None] < keep_n  # (Nk, K)
    if mode == "cl":
        cos_n = cos_neg.gather(0, order_n)  # (Nk, K)
        eps = 1e-6
        sp = ((cos_p + 1) / 2).clamp(eps, 1 - eps)  # (Q, K)
        sn = ((cos_n + 1) / 2).clamp(eps, 1 - eps)  # (Nk, K)
        hi, lo = 1 - smoothing / 2, smoothing / 2
        bce_p = -(hi * sp.log() + (1 - hi) * (1 - sp).log())  # (Q, K)
        bce_n = -(lo * sn.log() + (1 - lo) * (1 - sn).log())  # (Nk, K)
        total = torch.where(kept_p, bce_p, 0).sum(0) + torch.where(kept_n, bce_n, 0).sum(0)
        loss = total / (keep_p + keep_n).clamp(min=1)  # (K,)
    else:
        q = a.gather(0, order_p[..., None].expand(qmax, *a.shape[1:]))  # (Q, K, D)
        k = b.gather(0, order_p[..., None].expand(qmax, *b.shape[1:]))  # (Q, K, D)
        negs = neg[:u].gather(0, order_n[..., None].expand(nmax, *neg.shape[1:]))  # (Nk,K,D)
        l_pos = (q * k).sum(-1).T[..., None] / temperature  # (K, Q, 1)
        l_neg = torch.einsum("qkd,nkd->kqn", q, negs) / temperature  # (K, Q, Nk)
        l_neg = l_neg.masked_fill(~kept_n.T[:, None, :], float("-inf"))
        per_q = torch.logsumexp(torch.cat([l_pos, l_neg], 2), 2) - l_pos[..., 0]  # (K, Q)
        per_q = torch.where(kept_p.T, per_q, 0)
        loss = per_q.sum(1) / keep_p.clamp(min=1)  # (K,)
    return torch.where(eligible, loss, 0), eligible


RELEASED_FULL = 10
"""Released code: the positive CL term and InfoNCE need at least this many samples."""
RELEASED_INFONCE_MAX = 2000
"""Released code: InfoNCE pairs at most this many (positive, negative) rows."""


def released_class_losses(
    pos: Tensor,
    pos_valid: Tensor,
    neg: Tensor,
    neg_valid: Tensor,
    mode: Literal["cl", "infonce"] = "cl",
    keep_fraction: float = 0.5,
    smoothing: float = 0.1,
    temperature: float = 0.1,
    min_samples: int = 5,
) -> tuple[Tensor, Tensor]:
    """CT loss of every class by the released code's formulas (module docstring, ``released``).

    Samples must be packed valid-first per class, in random order (the code's
    shuffle). Where ``floor(keep * n)`` would be 0 (only for tiny ``keep``) one pair
    is kept; the released code would take the mean of nothing.

    Shape:
        pos ``(S, K, D)``, pos_valid ``(S, K)``, neg ``(T, K, D)``, neg_valid ``(T, K)``;
        returns ``loss (K,)`` (0 where not eligible) and ``eligible (K,)`` bool
        (at least ``min_samples`` positives and negatives: the groups the code visits).
    """
    s, t = pos.shape[0], neg.shape[0]
    dev = pos.device
    n_pos = pos_valid.sum(0)  # (K,)
    n_neg = neg_valid.sum(0)  # (K,)
    eligible = (n_pos >= min_samples) & (n_neg >= min_samples)  # (K,)
    full = max(RELEASED_FULL, min_samples)
    if mode == "cl":
        hi, lo = 1 - smoothing / 2, smoothing / 2
        # negative pairs (p_k, n_k), k < min(P, M): the first floor(keep * n), no mining
        u = max(min(s, t), 1)
        n = torch.minimum(n_pos, n_neg)  # (K,)
        keep_n = (n * keep_fraction).floor().long().clamp(min=1)  # (K,)
        kept_n = torch.arange(u, device=dev)[:, None] < torch.minimum(keep_n, n)  # (U, K)
        cos_n = (pos[:u] * neg[:u]).sum(-1)  # (U, K)
        # softmax([1 - s, s])_1 = sigmoid(2s - 1) = sigmoid(cos)
        bce_n = -(lo * F.logsigmoid(cos_n) + hi * F.logsigmoid(-cos_n))  # (U, K)
        l_neg = torch.where(kept_n, bce_n, 0).sum(0) / keep_n  # (K,)
        # positive pairs (p_i, p_{m+i}), i < m = P // 2: the first floor(keep * m)
        h = max(s // 2, 1)
        m = n_pos // 2  # (K,)
        keep_p = (m * keep_fraction).floor().long().clamp(min=1)  # (K,)
        i = torch.arange(h, device=dev)[:, None]  # (H, 1)
        kept_p = i < torch.minimum(keep_p, m)  # (H, K)
        b = pos.gather(0, (i + m).clamp(max=s - 1)[..., None].expand(h, *pos.shape[1:]))
        cos_p = (pos[:h] * b).sum(-1)  # (H, K)
        bce_p = -(hi * F.logsigmoid(cos_p) + lo * F.logsigmoid(-cos_p))  # (H, K)
        l_pos = torch.where(kept_p, bce_p, 0).sum(0) / keep_p  # (K,)
        loss = l_neg + torch.where(n_pos >= full, l_pos, 0)
        return torch.where(eligible, loss, 0), eligible
    # InfoNCE: mining on the negative pairs picks the positives too
    gate = eligible & (n_pos >= full) & (n_neg >= full)  # (K,) else the code returns 0
    u = max(min(s, t, RELEASED_INFONCE_MAX), 1)
    n = torch.minimum(n_pos, n_neg).clamp(max=RELEASED_INFONCE_MAX)  # (K,)
    cos_n = (pos[:u] * neg[:u]).sum(-1)  # (U, K)
    ok = torch.arange(u, device=dev)[:, None] < n  # (U, K)
    order = cos_n.masked_fill(~ok, float("-inf")).argsort(0, descending=True)  # (U, K)
    keep = (n * keep_fraction).floor().long().clamp(min=2)  # (K,) L
    half = keep // 2  # (K,) queries
    lmax = max(2, min(u, int(u * keep_fraction) + 1))
    top = order[:lmax]  # (Lm, K) T
    qmax = max(1, lmax // 2)
    j = torch.arange(qmax, device=dev)[:, None]  # (Q, 1)
    q_rows = top[:qmax]  # (Q, K)
    k_rows = top.gather(0, (j + half).clamp(max=lmax - 1))  # (Q, K)
    q = pos.gather(0, q_rows[..., None].expand(qmax, *pos.shape[1:]))  # (Q, K, D)
    key = pos.gather(0, k_rows[..., None].expand(qmax, *pos.shape[1:]))  # (Q, K, D)
    negs = neg[:u].gather(0, top[..., None].expand(lmax, *neg.shape[1:]))  # (Lm, K, D)
    kept = torch.arange(lmax, device=dev)[:, None] < keep  # (Lm, K)
    l_pos = (q * key).sum(-1).T[..., None] / temperature  # (K, Q, 1)
    l_neg = torch.einsum("qkd,nkd->kqn", q, negs) / temperature  # (K, Q, Lm)
    l_neg = l_neg.masked_fill(~kept.T[:, None, :], float("-inf"))
    per_q = torch.logsumexp(torch.cat([l_pos, l_neg], 2), 2) - l_pos[..., 0]  # (K, Q)
    per_q = torch.where((j < half).T, per_q, 0)
    loss = per_q.sum(1) / half.clamp(min=1)  # (K,)
    return torch.where(gate, loss, 0), eligible


class PatchContrastLoss(nn.Module):
    """The CT loss over several encoder stages with its projection heads.

    ``forward`` returns the *uncapped* CT value and the number of (stage, class)
    groups with enough samples, as a tensor. ``rule="paper"``: the mean over those
    groups (0, still connected to the graph, when none); ``rule="released"``: their
    sum divided by (stages x classes present in the mask). Shapes are static and
    nothing waits on the device. Computed in the dtype of the features (and heads).
    """

    def __init__(
        self,
        channels: list[int],
        reductions: list[int],
        num_classes: int,
        *,
        mode: Literal["cl", "infonce"] = "cl",
        stages: tuple[int, ...] = (0, 1, 2, 3),
        ignore_index: int = 255,
        hidden: int = 128,
        dim: int = 128,
        keep_fraction: float = 0.5,
        min_samples: int = 5,
        max_samples: int = 2048,
        smoothing: float = 0.1,
        temperature: float = 0.1,
        rule: Literal["paper", "released"] = "paper",
    ) -> None:
        super().__init__()
        if rule not in ("paper", "released"):
            raise ConfigError(f"loss.ct_mode {rule!r} is not one of paper, released")
        for s in stages:
            if not 0 <= s < len(channels):
                raise ConfigError(
                    f"loss.ct_stages {tuple(stages)}: stage {s} does not exist; the backbone "
                    f"has stages 0..{len(channels) - 1}"
                )
        if not 0 < keep_fraction <= 1:
            raise ConfigError(f"loss.ct_keep_fraction {keep_fraction} must be in (0, 1]")
        self.stages = tuple(stages)
        self.reductions = [reductions[s] for s in self.stages]
        self.heads = nn.ModuleList(ProjectionHead(channels[s], hidden, dim) for s in self.stages)
        self.num_classes = num_classes
        self.mode = mode
        self.ignore_index = ignore_index
        self.keep_fraction = keep_fraction
        self.min_samples = max(2, min_samples)
        self.max_samples = max_samples
        self.smoothing = smoothing
        self.temperature = temperature
        self.rule = rule

    def forward(
        self,
        feats: list[Tensor],
        mask: Tensor,
        gather=None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(CT loss, number of (stage, class) terms) of the encoder maps against ``mask`` ``(B, H, W)``."""
        k = self.num_classes
        emb_p, emb_n, ok_p, ok_n = [], [], [], []
        counts: Tensor | None = None
        present: Tensor | None = None
        prev_r = 0
        for head, s, r in sorted(
            zip(self.heads, self.stages, self.reductions, strict=True), key=lambda x: x[2]
        ):
            f = feats[s]  # (B, C, h, w)
            if counts is not None and r % prev_r == 0:
                counts = pool_counts(counts, r // prev_r)
            else:
                counts = token_class_counts(mask, r, k, self.ignore_index)
            prev_r = r
            if counts.shape[1:3] != f.shape[-2:]:
                raise ValueError(
                    f"stage {s}: feature map {tuple(f.shape[-2:])} does not match the "
                    f"{r}x{r} blocks of the mask {tuple(counts.shape[1:3])}"
                )
            if present is None:  # classes with a labelled pixel anywhere in the mask
                present = counts[..., :k].sum((0, 1, 2)) > 0  # (K,)
            if self.rule == "released":
                pos, neg = released_labels_from_counts(counts, k)  # (B, h, w, K) token order
            else:
                pos, neg = labels_from_counts(counts[..., :k])  # (B, h, w, K) in token order
            flags = torch.cat([pos, neg], -1).view(-1, 2 * k)  # (N, 2K)
            idx, valid = sample_per_class(flags, self.max_samples, generator)  # (S, 2K)
            tokens = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])  # (N, C)
            rows = idx.reshape(-1)  # (S*2K,) a token recurs once per class
            # fewer tokens than draws: project each token once, then index
            few = tokens.shape[0] <= rows.numel()
            both = head(tokens)[rows] if few else head(tokens[rows])  # (S*2K, D)
            both = both.view(idx.shape[0], 2 * k, -1)  # (S, 2K, D)
            emb_p.append(both[:, :k])
            emb_n.append(both[:, k:])
            ok_p.append(valid[:, :k])
            ok_n.append(valid[:, k:])
        # All (stage, class) groups side by side: (S, G, D) with G = stages * K, padded rows invalid.
        ep, en = _side_by_side(emb_p), _side_by_side(emb_n)
        vp, vn = _side_by_side(ok_p), _side_by_side(ok_n)
        if gather is not None:
            ep, en = gather(ep), gather(en)
            vp, vn = gather(vp.to(torch.uint8)).bool(), gather(vn.to(torch.uint8)).bool()
            ep, vp = pack_valid_first(ep, vp, generator)
            en, vn = pack_valid_first(en, vn, generator)
            if self.rule == "released":  # classes present on any rank
                assert present is not None
                present = gather(present[None].to(torch.uint8)).bool().any(0)
        losses = released_class_losses if self.rule == "released" else batched_class_losses
        loss, ok = losses(
            ep,
            vp,
            en,
            vn,
            self.mode,
            self.keep_fraction,
            self.smoothing,
            self.temperature,
            self.min_samples,
        )  # (G,), (G,)
        count = ok.sum()
        if self.rule == "released":
            assert present is not None
            denom = (present.sum() * len(self.stages)).clamp(min=1)  # stages x classes present
            return loss.sum() / denom, count
        return loss.sum() / count.clamp(min=1), count


def _side_by_side(parts: list[Tensor]) -> Tensor:
    """Concatenate ``(S_i, K, ...)`` tensors along dim 1, padding rows with zeros / False."""
    rows = max(p.shape[0] for p in parts)
    padded = [
        p if p.shape[0] == rows else torch.cat([p, p.new_zeros((rows - p.shape[0], *p.shape[1:]))])
        for p in parts
    ]
    return torch.cat(padded, 1)

"""CT: patch contrastive learning on the encoder's innate patches (DESIGN section 4).

At a stage with reduction ``r`` every token covers an ``r x r`` pixel block. For
class ``c`` a block whose labelled pixels are all ``c`` is a *positive*, a block
with no pixel of ``c`` is a *negative*; mixed blocks that contain ``c`` and
all-ignore blocks are discarded. Tokens go through a per-stage projection head
and are L2-normalised; samples are pooled over the batch (and over ranks when a
``gather`` is given). Hard mining keeps the least similar positive pairs and the
most similar negative pairs; the CL loss (BCE on ``s = (cos + 1) / 2``, label
smoothing) or InfoNCE is averaged over stages and classes.

Everything per pair is vectorised; Python loops run over stages and classes only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aerialct.errors import ConfigError


def block_class_counts(mask: Tensor, reduction: int, num_classes: int, ignore_index: int) -> Tensor:
    """Pixels of each class in every ``reduction x reduction`` block, in token order.

    Shape:
        mask ``(B, H, W)`` int64 with H, W multiples of ``reduction``;
        returns ``(B, K, H / r, W / r)`` int64 counts (ignore pixels count nowhere).
    """
    b, h, w = mask.shape
    r = reduction
    if h % r or w % r:
        raise ValueError(f"mask {h}x{w} is not a multiple of the stage reduction {r}")
    valid = mask != ignore_index  # (B, H, W)
    onehot = F.one_hot(torch.where(valid, mask, 0), num_classes) * valid[..., None]  # (B,H,W,K)
    counts = onehot.view(b, h // r, r, w // r, r, num_classes).sum((2, 4))  # (B, h, w, K)
    return counts.permute(0, 3, 1, 2)  # (B, K, h, w)


def block_labels(
    mask: Tensor, reduction: int, num_classes: int, ignore_index: int = 255
) -> tuple[Tensor, Tensor]:
    """Positive and negative blocks per class (mixed and all-ignore blocks are neither).

    Shape:
        mask ``(B, H, W)``; returns ``(pos, neg)``, each ``(B, K, H / r, W / r)`` bool.
    """
    counts = block_class_counts(mask, reduction, num_classes, ignore_index)  # (B, K, h, w)
    labelled = counts.sum(1, keepdim=True)  # (B, 1, h, w)
    pos = (counts == labelled) & (labelled > 0)  # (B, K, h, w)
    neg = (counts == 0) & (labelled > 0)  # (B, K, h, w)
    return pos, neg


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


def cap_loss(loss: Tensor, cap: float = 1.0) -> Tensor:
    """Rescale so the value never exceeds ``cap``: ``loss / max(1, loss / cap)`` (detached).

    Unlike a clamp, the gradient above the cap is scaled down, not zeroed.
    """
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
        return F.normalize(self.net(x), dim=-1)  # (N, out_dim)


def _shuffled(idx: Tensor, limit: int, generator: torch.Generator | None) -> Tensor:
    perm = torch.randperm(idx.numel(), device=idx.device, generator=generator)
    return idx[perm[:limit]] if limit > 0 else idx[perm]


class PatchContrastLoss(nn.Module):
    """The CT loss over several encoder stages with its projection heads.

    ``forward`` returns the *uncapped* mean over the (stage, class) terms that
    had enough samples, and the number of such terms (0: the loss is None).
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
        max_samples: int = 4096,
        smoothing: float = 0.1,
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
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

    def forward(
        self,
        feats: list[Tensor],
        mask: Tensor,
        gather=None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor | None, int]:
        terms: list[Tensor] = []
        k = self.num_classes
        for head, s, r in zip(self.heads, self.stages, self.reductions, strict=True):
            f = feats[s].float()  # (B, C, h, w)
            pos, neg = block_labels(mask, r, k, self.ignore_index)  # (B, K, h, w)
            if pos.shape[-2:] != f.shape[-2:]:
                raise ValueError(
                    f"stage {s}: feature map {tuple(f.shape[-2:])} does not match the "
                    f"{r}x{r} blocks of the mask {tuple(pos.shape[-2:])}"
                )
            tokens = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])  # (N, C)
            pos = pos.permute(0, 2, 3, 1).reshape(-1, k)  # (N, K)
            neg = neg.permute(0, 2, 3, 1).reshape(-1, k)  # (N, K)
            # Subsample at most max_samples positives and negatives per class (random),
            # and project only the tokens some class uses.
            chosen_pos = torch.zeros_like(pos)
            chosen_neg = torch.zeros_like(neg)
            for c in range(k):
                ip = _shuffled(pos[:, c].nonzero()[:, 0], self.max_samples, generator)
                ineg = _shuffled(neg[:, c].nonzero()[:, 0], self.max_samples, generator)
                chosen_pos[ip, c] = True
                chosen_neg[ineg, c] = True
            used = (chosen_pos | chosen_neg).any(1).nonzero()[:, 0]  # (U,)
            if used.numel() == 0 and gather is None:
                continue
            emb = head(tokens[used])  # (U, D)
            cpos, cneg = chosen_pos[used], chosen_neg[used]  # (U, K)
            if gather is not None:
                flags = torch.cat([cpos, cneg], 1).to(torch.uint8)  # (U, 2K)
                emb, flags = gather(emb), gather(flags).bool()
                cpos, cneg = flags[:, :k], flags[:, k:]
            for c in range(k):
                ip = _shuffled(cpos[:, c].nonzero()[:, 0], 0, generator)
                ineg = _shuffled(cneg[:, c].nonzero()[:, 0], 0, generator)
                if ip.numel() < self.min_samples or ineg.numel() < self.min_samples:
                    continue
                terms.append(
                    class_contrast_loss(
                        emb[ip],
                        emb[ineg],
                        self.mode,
                        self.keep_fraction,
                        self.smoothing,
                        self.temperature,
                    )
                )
        if not terms:
            return None, 0
        return torch.stack(terms).mean(), len(terms)

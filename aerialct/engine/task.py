"""The training task: model + losses -> a dict of named loss terms.

``SegmentationTask(images, masks)`` runs the model once (logits and encoder
features), computes the segmentation loss (soft CE + Dice) and the contrastive
terms selected by ``loss.contrast``:

=====================  ===============================================
``none``               CE + Dice
``ct-cl``              + ct_lambda * cap(CT with the CL loss)
``ct-infonce``         + ct_lambda * cap(CT with InfoNCE)
``mscs``               + ms_lambda * L_ms + cs_lambda * L_cs
``ct-cl+mscs``         both
``ct-infonce+mscs``    both
=====================  ===============================================

``loss.ct_mode`` / ``loss.mscs_mode`` choose the paper's rules (default) or the
authors' released code's (see :mod:`aerialct.losses.ct` and :mod:`aerialct.losses.mscs`);
in ``released`` CT mode the CT term is clamped at 1.0 instead of rescaled.
``loss.mscs_features: decoder`` contrasts the decoder's multi-scale maps instead of
the encoder's.

The losses run with autocast off, on the features promoted to at least float32
(bf16 / fp16 maps are upcast, float64 stays float64). The contrastive modules would
compute in at least float32 anyway (:mod:`aerialct.losses.precision`).

The projection heads live in ``task.heads`` (saved as the checkpoint's
``"heads"``); ``task.model`` is the inference model alone.

Under DDP, pass ``gather`` (:func:`aerialct.engine.distributed.gather_with_grad`)
and ``world_size``: ``gather`` concatenates a tensor's rows from all ranks (row
counts may differ) and its backward sums the gradient over ranks. The contrastive
samples of all ranks are pooled before pairing (CT) and before the anchor/contrast
sets are formed (MS/CS); each rank draws its share of the sample budget
(``ct_max_samples``, ``mscs_max_total``...), so the pool is the size one process
would draw. With DDP's average of the gradients, the objective and its gradient are
those of one process on the whole batch (``tests/test_ddp.py`` checks this).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from aerialct.errors import ConfigError
from aerialct.losses.config import LossConfig
from aerialct.losses.ct import PatchContrastLoss, cap_loss
from aerialct.losses.imbalance import focal_loss
from aerialct.losses.mscs import MultiScaleContrastLoss
from aerialct.losses.segmentation import SegmentationLoss
from aerialct.models.model import SegmentationModel

GatherFn = Callable[[Tensor], Tensor]

CONTRAST_MODES = ("none", "ct-cl", "ct-infonce", "mscs", "ct-cl+mscs", "ct-infonce+mscs")
LOSS_MODES = ("paper", "released")
MSCS_FEATURES = ("encoder", "decoder")


def _at_least_float32(t: Tensor) -> Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


class SegmentationTask(nn.Module):
    """Model plus losses; ``forward(images, masks)`` returns the named loss terms.

    Shape:
        images ``(B, C, H, W)`` float normalised, masks ``(B, H, W)`` int64 (255 = ignore);
        returns ``{"loss": scalar with grad, "logits": (B, K, H, W), "ce", "dice",
        ["focal"], ["ct"], ["ms"], ["cs"]}``; the named terms are detached scalars.
        ``"ct"`` is the uncapped CT mean (the total uses the capped value).

    ``task.terms`` names the scalar terms this task returns, ``"loss"`` first: the
    training loop logs exactly these (``train_<term>`` in ``metrics.csv``), in this order.
    """

    def __init__(
        self,
        model: SegmentationModel,
        loss_cfg: LossConfig,
        num_classes: int,
        ignore_index: int = 255,
        gather: GatherFn | None = None,
        class_weight: Tensor | None = None,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        mode = loss_cfg.contrast
        if mode not in CONTRAST_MODES:
            raise ConfigError(f"loss.contrast {mode!r} is not one of {', '.join(CONTRAST_MODES)}")
        for key in ("ct_mode", "mscs_mode"):
            if getattr(loss_cfg, key) not in LOSS_MODES:
                raise ConfigError(
                    f"loss.{key} {getattr(loss_cfg, key)!r} is not one of {', '.join(LOSS_MODES)}"
                )
        if loss_cfg.mscs_features not in MSCS_FEATURES:
            raise ConfigError(
                f"loss.mscs_features {loss_cfg.mscs_features!r} is not one of "
                f"{', '.join(MSCS_FEATURES)}"
            )
        self.model = model
        self.cfg = loss_cfg
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.gather = gather
        self.world_size = world_size if gather is not None else 1
        self.seg_loss = SegmentationLoss(
            ignore_index, loss_cfg.ce_smoothing, loss_cfg.dice_weight, class_weight
        )
        channels = list(model.feature_channels)
        reductions = list(model.feature_reductions)
        self.heads = nn.ModuleDict()
        if mode.startswith("ct-"):
            self.heads["ct"] = PatchContrastLoss(
                channels,
                reductions,
                num_classes,
                mode="cl" if mode.startswith("ct-cl") else "infonce",
                stages=tuple(loss_cfg.ct_stages),
                ignore_index=ignore_index,
                hidden=loss_cfg.ct_proj_hidden,
                dim=loss_cfg.ct_proj_dim,
                keep_fraction=loss_cfg.ct_keep_fraction,
                min_samples=loss_cfg.ct_min_samples,
                max_samples=loss_cfg.ct_max_samples,
                smoothing=loss_cfg.ct_smoothing,
                temperature=loss_cfg.ct_temperature,
                rule=loss_cfg.ct_mode,
            )
        self.mscs_on_decoder = mode.endswith("mscs") and loss_cfg.mscs_features == "decoder"
        if mode.endswith("mscs"):
            mscs_channels = channels
            if self.mscs_on_decoder:
                dec = getattr(model, "decoder_feature_channels", None)
                if not dec or len(dec) != len(channels):
                    raise ConfigError(
                        "loss.mscs_features 'decoder': this model's decoder has no multi-scale "
                        "maps at the encoder's strides; use decoder fpn, dcswin or unetformer, "
                        "or mscs_features 'encoder'"
                    )
                mscs_channels = list(dec)
            anchors, layers = loss_cfg.mscs_settings()
            self.heads["mscs"] = MultiScaleContrastLoss(
                mscs_channels,
                reductions,
                num_classes,
                ignore_index=ignore_index,
                dim=loss_cfg.mscs_dim,
                temperature=loss_cfg.mscs_temperature,
                ms_weights=tuple(loss_cfg.ms_weights),
                cs_pairs=tuple(tuple(p) for p in loss_cfg.cs_pairs),  # type: ignore[misc]
                min_pixels=loss_cfg.mscs_min_pixels,
                max_k=loss_cfg.mscs_max_k,
                max_total=loss_cfg.mscs_max_total,
                anchors=anchors,  # type: ignore[arg-type]
                proj_layers=layers,
            )

        self.terms: tuple[str, ...] = (
            "loss",
            "ce",
            "dice",
            *(("focal",) if loss_cfg.focal_weight else ()),
            *(("ct",) if "ct" in self.heads else ()),
            *(("ms", "cs") if "mscs" in self.heads else ()),
        )

    def forward(self, images: Tensor, masks: Tensor) -> dict[str, Tensor]:
        """The logits and every term of :attr:`terms` for one batch (see the class docstring)."""
        if self.mscs_on_decoder:
            logits, feats, dec = self.model.forward_with_decoder_features(images)
        else:
            logits, feats = self.model.forward_with_features(images)
            dec = feats
        cfg = self.cfg
        out: dict[str, Tensor] = {}
        # Losses with autocast off, in at least float32: logsumexp / log at t = 0.1 need
        # the range. The modules follow their input's dtype (float64 stays float64).
        with torch.autocast(device_type=images.device.type, enabled=False):
            logits32 = _at_least_float32(logits)
            total, ce, dice = self.seg_loss(logits32, masks)
            out["ce"], out["dice"] = ce.detach(), dice.detach()
            if cfg.focal_weight:
                focal = focal_loss(logits32, masks, cfg.focal_gamma, self.ignore_index)
                total = total + cfg.focal_weight * focal
                out["focal"] = focal.detach()
            if "ct" in self.heads:
                ct, _ = self.heads["ct"](
                    [_at_least_float32(f) for f in feats], masks, self.gather, None, self.world_size
                )
                total = total + cfg.ct_lambda * cap_loss(ct, 1.0, cfg.ct_mode)
                out["ct"] = ct.detach()
            if "mscs" in self.heads:
                maps = [_at_least_float32(f) for f in dec]
                ms, cs = self.heads["mscs"](maps, masks, self.gather, None, self.world_size)
                total = total + cfg.ms_lambda * ms + cfg.cs_lambda * cs
                out["ms"], out["cs"] = ms.detach(), cs.detach()
        out["loss"] = total
        out["logits"] = logits
        return out

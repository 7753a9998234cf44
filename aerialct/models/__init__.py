"""Segmentation models: timm backbone adapter, decoders, projection heads."""

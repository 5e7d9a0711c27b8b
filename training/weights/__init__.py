"""Pretrained weights: installable Whisper bundles, the CTranslate2 reader and the converter."""

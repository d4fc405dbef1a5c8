"""Losses of the methods that MONAI does not provide: active contour (``acwe``), GAN terms (``gan``), the
batch-pooled soft Dice (``soft_dice``), UniMatch's supervised / confidence-masked Dice terms (``unimatch``)."""

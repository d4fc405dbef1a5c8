"""Losses of the methods that MONAI does not provide (active-contour, translation, adversarial terms)."""

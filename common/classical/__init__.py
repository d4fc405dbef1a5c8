"""Classical (non-learned) segmentation baselines, run per image."""

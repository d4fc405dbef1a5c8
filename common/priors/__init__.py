"""Per-image optimisations used as priors: the Deep Segmentation Prior and Deep Image Prior of AF-Seg stage 2."""

"""Networks of the methods (MONAI provides UNet, AttentionUnet, discriminators and SPADE blocks; these are the rest,
including the feature-perturbation U-Net of UniMatch)."""

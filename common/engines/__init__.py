"""Ignite engines (subclasses of monai.engines.Trainer) for the adversarial, translation, UniMatch and self-training
loops."""

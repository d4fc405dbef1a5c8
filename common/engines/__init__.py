"""Ignite engines (subclasses of monai.engines.Trainer) for the adversarial, translation and self-training loops."""

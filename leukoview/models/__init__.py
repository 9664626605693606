"""Floor 1, models and their data: the typed card, bundles, datasets and splits, architectures, transforms."""

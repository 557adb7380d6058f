"""The pure core: formats, Merkle trees, notes, checkpoints and proof bundles. No I/O."""

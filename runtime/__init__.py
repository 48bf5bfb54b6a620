"""Process-level tooling shared by the workers (the consumer, the projection runner); no
domain knowledge here."""

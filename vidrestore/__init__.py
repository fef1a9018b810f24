"""vidrestore: video face restoration with GFP-GAN."""

__version__ = "0.1.0"

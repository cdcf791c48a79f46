"""giftbox: OpenStack from a pinned upstream ref plus local patches, as native packages."""

__version__ = "0.1.0"

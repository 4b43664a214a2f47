"""clusterwatch: keeps an AI cluster healthy without a person watching."""

__version__ = "0.1.0"

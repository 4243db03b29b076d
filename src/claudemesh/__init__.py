"""claudemesh: a peer-mesh runtime (local daemon + broker)."""

__version__ = "0.1.0"

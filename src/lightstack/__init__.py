"""lightstack: a PyTorch Lightning training stack for physics surrogates and multi-view video."""

__version__ = "0.1.0"

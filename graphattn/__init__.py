"""graphattn: self-attention as message passing, with the attention pattern as a graph."""
from graphattn import patterns
from graphattn.patterns import Pattern
from graphattn.attention import GraphMultiheadAttention
from graphattn.graph_models import GraphTransformer

__version__ = "0.1.0"

__all__ = ["patterns", "Pattern", "GraphMultiheadAttention", "GraphTransformer", "__version__"]

r"""Graph structure computed once per graph, as PyG transforms: positional encodings, which
pattern pairs are graph edges, and shortest-path buckets.

They sit below :mod:`graphattn.nn`: models expose what they need as transforms, which a user
applies once to a data set (``[transform(d) for d in data]`` or a dataset's ``pre_transform``).
"""
from graphattn.transforms.positional import PE_ATTRS, LaplacianPE, positional_encoding_transform
from graphattn.transforms.structure import (PAIR_ATTRS, GraphStructure, InDegree, pair_edge_ids, pattern_edge_attr,
                                            pattern_pairs, shortest_path_buckets)

__all__ = ["PE_ATTRS", "LaplacianPE", "positional_encoding_transform", "GraphStructure", "InDegree", "PAIR_ATTRS",
           "pattern_pairs", "pair_edge_ids", "pattern_edge_attr", "shortest_path_buckets"]

"""Utilities at the bottom of the library: argument checks, batch layouts (``ptr``/``batch``),
sorted edge lists, timing and memory probes, result tables. They import nothing else of graphattn."""
from graphattn.utils.batch import (
    Layout, batch_to_ptr, graph_layout, layouts, lengths_to_ptr, local_positions, ptr_to_batch, ptr_to_lengths,
    to_flat, to_padded,
)
from graphattn.utils.checks import PtrLike, check_edge_index, check_float, check_int, check_ptr, eager_only

__all__ = ["Layout", "layouts", "lengths_to_ptr", "ptr_to_lengths", "ptr_to_batch", "batch_to_ptr", "local_positions",
           "graph_layout", "to_flat", "to_padded", "PtrLike", "check_int", "check_float", "check_ptr",
           "check_edge_index", "eager_only"]

r"""What the stages of :class:`~graphattn.nn.GraphTransformer` pass along, and what its helpers
share with other models: the :class:`GraphState` between ``embed``, ``blocks`` and ``readout``,
the checked positional encoding of a batch, a ``Data`` from PyG's ``(x, edge_index, ...)`` call
form, and the order of the attention pairs that PyG's explainers expect (the graph's edges first).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.data.data import BaseData
from torch_geometric.utils import degree

from graphattn.transforms import PE_ATTRS, positional_encoding_transform
from graphattn.utils.checks import check_dtype, check_edge_index

__all__ = ["GraphState", "positional_features", "positional_encoding_of_batch", "in_degree_of_batch", "as_graph_data",
           "edges_first", "check_graph_data"]


class GraphState(NamedTuple):
    """What flows between the stages of :class:`GraphTransformer` (``embed -> blocks -> readout``)."""

    h: Tensor  # [N + B K, C]: the real nodes' states, then the K virtual nodes of each graph
    vn: Optional[Tensor]  # [B, C] per-graph virtual_node state (virtual_node=True), else None
    batch: Tensor  # [N] graph of each real node
    ptr: Tensor  # [B + 1] node offsets of the graphs
    num_nodes: int  # N, the real nodes
    edge_index: Tensor  # [2, E] the graph's edges (the local layer's)
    edge_h: Optional[Tensor]  # [E, C] encoded edge features
    pairs: Optional[Tensor]  # [2, E_p] attention pairs, virtual ones included (None: not built)
    pair_attr: Optional[Tensor]  # [E_p, C] the encoded features of each pair's graph edge, zero elsewhere
    buckets: Optional[Tensor]  # [E_p] shortest-path bucket of each pair
    dense_ptr: Optional[Tensor]  # ptr where the dense kernel computes the (dense) pairs, else None
    outputs: tuple = ()  # [N, C] real nodes' state after each block so far, kept for jumping knowledge (jk)


def positional_features(data, pe: str, pe_dim: int, batch: Tensor, num_graphs: int, flip_signs: bool,
                        on_missing: Optional[Callable[[], None]] = None) -> Tensor:
    r"""The positional encoding a model reads from ``data`` (:data:`~graphattn.transforms.PE_ATTRS`),
    checked, :math:`(N, \text{pe\_dim})`; Laplacian eigenvectors are defined up to sign, so with
    ``flip_signs`` (in training) each one is flipped at random, per graph. Where ``data`` lacks it,
    ``on_missing`` is called (a model's warning) and it is computed now
    (:func:`positional_encoding_of_batch`); without ``on_missing`` that is a ``ValueError``."""
    attr = PE_ATTRS[pe]
    value = getattr(data, attr, None)
    if value is None and on_missing is None:
        raise ValueError(f"pe={pe!r} reads data.{attr} [N, {pe_dim}]: add it with "
                         f"graphattn.transforms.positional_encoding_transform({pe!r}, {pe_dim})")
    if value is None:
        on_missing()
        value = positional_encoding_of_batch(data, pe, pe_dim, batch, num_graphs)
    if not isinstance(value, Tensor) or value.dim() != 2 or value.size(1) != pe_dim:
        raise ValueError(f"data.{attr} must have shape [N, pe_dim={pe_dim}], got {tuple(getattr(value, 'shape', ()))}")
    if pe == "laplacian" and flip_signs:
        sign = torch.randint(0, 2, (num_graphs, pe_dim), device=value.device) * 2 - 1
        value = value * sign[batch]
    return value


def positional_encoding_of_batch(data, pe: str, pe_dim: int, batch: Tensor, num_graphs: int) -> Tensor:
    r"""The ``pe`` encoding of every graph of ``data`` (a ``Data`` or ``Batch``), computed now by the
    transform of :func:`~graphattn.transforms.positional_encoding_transform`, :math:`(N, \text{pe\_dim})`,
    the same numbers as that transform applied to each graph before batching. A random walk never
    leaves its graph, so one pass over the batch's block-diagonal walk matrix gives every graph's
    return probabilities; Laplacian eigenvectors are per graph, so each graph gets its own solve."""
    transform = positional_encoding_transform(pe, pe_dim)
    attr, num_nodes = PE_ATTRS[pe], data.x.size(0)
    edge_index, batch = data.edge_index.cpu(), batch.cpu()  # the transforms run in numpy/scipy
    if pe == "random_walk" or num_graphs == 1:
        value = transform(Data(edge_index=edge_index, num_nodes=num_nodes))[attr]
    else:  # PyG's unbatch_edge_index assumes edges grouped by graph and drops trailing edgeless graphs
        sizes = torch.bincount(batch, minlength=num_graphs)
        ptr = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])
        edge_graph = batch[edge_index[0]]
        order = torch.argsort(edge_graph, stable=True)
        local = (edge_index[:, order] - ptr[edge_graph[order]]).split(
            torch.bincount(edge_graph, minlength=num_graphs).tolist(), dim=1)
        value = torch.cat([transform(Data(edge_index=ei, num_nodes=int(n)))[attr] for ei, n in zip(local, sizes)])
    return value.to(data.x.device)


def in_degree_of_batch(data, num_nodes: int) -> Tensor:
    """``data.in_degree`` where :class:`~graphattn.transforms.InDegree` stored the whole graph's
    (sampled subgraphs), else the count of the batch's own edges."""
    stored = getattr(data, "in_degree", None)
    if stored is None:
        return degree(data.edge_index[1], num_nodes, dtype=torch.long)
    if not isinstance(stored, Tensor) or stored.shape != (num_nodes,) or stored.is_floating_point():
        raise ValueError(f"data.in_degree must be an integer tensor [{num_nodes}] (InDegree's), got "
                         f"{getattr(stored, 'dtype', type(stored).__name__)} {tuple(getattr(stored, 'shape', ()))}")
    return stored.long()


def as_graph_data(data, edge_index: Optional[Tensor] = None, edge_attr: Optional[Tensor] = None,
                  batch: Optional[Tensor] = None, fields: Optional[dict] = None) -> BaseData:
    """``data`` itself (a ``Data``/``Batch``), or a ``Data`` built from PyG's call form
    ``(x, edge_index, edge_attr, batch=..., **fields)``, which PyG's ``Explainer`` uses."""
    fields = fields or {}
    if isinstance(data, Tensor):
        if edge_index is None:
            raise TypeError("data is a Tensor, which PyG's call form model(x, edge_index, ...) takes as the node "
                            "features x: give edge_index [2, E] too, or a Data/Batch")
        given = {key: value for key, value in fields.items() if value is not None}
        return Data(x=data, edge_index=edge_index, edge_attr=edge_attr, batch=batch, **given)
    if not isinstance(data, BaseData):
        raise TypeError(f"data must be a torch_geometric Data/Batch, or the node features x [N, F] followed by "
                        f"edge_index, got {type(data).__name__}")
    extra = [name for name, value in (("edge_index", edge_index), ("edge_attr", edge_attr), ("batch", batch))
             if value is not None] + sorted(fields)
    if extra:
        raise TypeError(f"give a Data/Batch alone (its fields are read from it), or x [N, F] with edge_index: "
                        f"got a {type(data).__name__} and {', '.join(extra)}")
    return data


def edges_first(pair_edge: Tensor, edge_index: Tensor, pattern: str) -> Tensor:
    r"""An order of the attention pairs that lists the graph's edges first (edge ``e`` at position
    ``e``), then the other pairs in their order.

    PyG's explainers assume it: GNNExplainer's edge mask multiplies the first ``E`` messages of
    every layer, and AttentionExplainer reads the first ``E`` attention weights, in the order of
    the ``edge_index`` they were given. The pairs a pattern adds beyond the edges (self loops,
    k-hop and virtual pairs) keep their messages, as PyG's convolutions do with the self loops
    they add.

    Args:
        pair_edge (LongTensor): :math:`(E_p)` the column in ``edge_index`` of each pair's edge,
            ``-1`` for pairs that are no edge.
        edge_index (LongTensor): the graph's edges :math:`(2, E)`.
        pattern (str): the pattern's name, for the message.

    Returns:
        LongTensor :math:`(E_p)`, a permutation of the pairs.

    Raises:
        ValueError: where an edge is no pair: a pattern that does not attend every edge of the
        graph (a mask on that edge could not act on attention), or a parallel edge.
    """
    num_edges = edge_index.size(1)
    is_edge = pair_edge >= 0
    pair_ids = is_edge.nonzero().squeeze(1)
    count = torch.zeros(num_edges, dtype=torch.long, device=pair_edge.device)
    count.index_add_(0, pair_edge[pair_ids], torch.ones_like(pair_ids))
    if not bool((count == 1).all()):
        edge = int((count != 1).nonzero()[0])
        j, i = (int(v) for v in edge_index[:, edge])
        same = ((edge_index[0] == j) & (edge_index[1] == i)).sum()
        if int(same) > 1:
            raise ValueError(f"data.edge_index holds the edge {j} -> {i} {int(same)} times: an edge mask cannot tell "
                             "parallel edges apart in attention; coalesce the edges first "
                             "(torch_geometric.utils.coalesce)")
        raise ValueError(f"the pattern {pattern!r} does not attend the graph's edge {edge} ({j} -> {i}), so an edge "
                         "mask cannot act on its attention: explain a model whose pattern contains the graph's edges "
                         "('graph', 'khop:k', 'dense', or a union with one of them)")
    first = torch.empty(num_edges, dtype=torch.long, device=pair_edge.device)
    first[pair_edge[pair_ids]] = pair_ids
    return torch.cat([first, (~is_edge).nonzero().squeeze(1)])


def check_graph_data(data, in_channels: int, dtype: torch.dtype, edge_dim: Optional[int]) -> Optional[Tensor]:
    """``data.edge_attr`` (None without ``edge_dim``) after checking what a :class:`GraphTransformer`
    with these sizes and parameter ``dtype`` reads of ``data``."""
    x = getattr(data, "x", None)
    if not isinstance(x, Tensor) or x.dim() != 2 or x.size(1) != in_channels:
        raise ValueError(f"data.x must be a float tensor [N, {in_channels}], got {getattr(x, 'shape', x)}")
    if not x.is_floating_point():
        raise TypeError(f"data.x must be a float tensor [N, {in_channels}], got dtype {x.dtype}")
    check_dtype("data.x", x, dtype, "the model's parameters")
    edge_index = check_edge_index(getattr(data, "edge_index", None), "data.edge_index", x.size(0), x.size(0),
                                  " (the rows of data.x)")
    if edge_dim is None:
        return None
    edge_attr = getattr(data, "edge_attr", None)
    if edge_attr is None:
        raise ValueError(f"the model has edge_dim={edge_dim}: data.edge_attr [E, {edge_dim}] is missing")
    expected = (edge_index.size(1), edge_dim)
    if not isinstance(edge_attr, Tensor) or tuple(edge_attr.shape) != expected:
        raise ValueError(f"data.edge_attr must have shape [E, edge_dim] = [{expected[0]}, {expected[1]}] (one row "
                         f"per edge of data.edge_index), got {tuple(getattr(edge_attr, 'shape', ())) or edge_attr}")
    if edge_attr.is_complex():
        raise TypeError(f"data.edge_attr must hold real numbers (cast to the model's dtype), "
                        f"got dtype {edge_attr.dtype}")
    return edge_attr

r"""Graph applications: data sets, PyG baselines and one training loop for both.

* ``datasets.py``: karate club, SBM PATTERN, tree NeighborsMatch, FreeSolv molecules.
* ``baselines.py``: :class:`GNNBaseline`, PyG layers in the frame of :class:`~graphattn.nn.GraphTransformer`.
* ``fit.py``: :func:`fit`, :class:`Task` and metrics; data-parallel under ``torchrun``.
* ``public_data.py``: public benchmarks with official splits (heterophilous graphs, Planetoid, MoleculeNet)
  from a local data folder, read through PyG's dataset classes; :func:`scaffold_split`.
* ``social.py``: :func:`social_graph`, large generated social graphs (communities, power-law degrees).
* ``sampling.py``, ``node_training.py``: training on ``NeighborLoader`` subgraphs of one large graph
  (:func:`fit_nodes`) and full-graph inference layer by layer (:func:`layerwise_inference`).
"""
from graphattn.graphs.baselines import BASELINES, GLOBAL_BASELINES, GlobalBaseline, GNNBaseline
from graphattn.graphs.fit import Task, accuracy, balanced_accuracy, binary_loss, fit, loader_metric, rmse, roc_auc
from graphattn.graphs.node_training import fit_nodes, full_graph_logits, layerwise_inference
from graphattn.graphs.sampling import TorchNeighborSampler, neighbor_loader
from graphattn.graphs.public_data import cora, heterophilous, moleculenet, planetoid, scaffold_split
from graphattn.graphs.social import social_graph

__all__ = ["BASELINES", "GNNBaseline", "GLOBAL_BASELINES", "GlobalBaseline", "Task", "fit", "loader_metric", "accuracy",
           "balanced_accuracy", "rmse", "social_graph", "neighbor_loader", "TorchNeighborSampler", "fit_nodes",
           "layerwise_inference", "full_graph_logits", "heterophilous", "planetoid", "cora", "moleculenet", "scaffold_split",
           "roc_auc", "binary_loss"]

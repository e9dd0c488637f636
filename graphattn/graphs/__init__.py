r"""Graph applications: data sets, PyG baselines and one training loop for both.

* ``datasets.py``: karate club, SBM PATTERN, tree NeighborsMatch, FreeSolv molecules.
* ``baselines.py``: :class:`GNNBaseline`, PyG layers in the frame of :class:`~graphattn.nn.GraphTransformer`.
* ``fit.py``: :func:`fit`, :class:`Task` and metrics; data-parallel under ``torchrun``.
"""
from graphattn.graphs.baselines import BASELINES, GNNBaseline
from graphattn.graphs.fit import Task, accuracy, balanced_accuracy, evaluate, fit, rmse

__all__ = ["BASELINES", "GNNBaseline", "Task", "fit", "evaluate", "accuracy", "balanced_accuracy", "rmse"]

r"""Which attention pattern for my data? Patterns measured side by side.

* ``stats.py``: statistics of each pattern and the measured cost of one layer per length,
  beside Table 1 of "Attention Is All You Need".
* ``training.py``, ``classifier.py``, ``listops.py``: the same classifier trained under each
  pattern on a generated ListOps task.
* ``report.py``, ``plots.py``: tables (markdown, CSV, JSON) and plots.

``graphattn compare`` runs both parts.
"""
from graphattn.compare.classifier import SequenceClassifier
from graphattn.compare.report import stats_report, train_report
from graphattn.compare.stats import default_stats_patterns, stats_table
from graphattn.compare.training import TrainSettings, default_learned_spans, default_train_patterns, summarise, train_table

__all__ = ["SequenceClassifier", "stats_report", "train_report", "stats_table", "train_table", "summarise",
           "TrainSettings", "default_stats_patterns", "default_train_patterns", "default_learned_spans"]

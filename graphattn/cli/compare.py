"""``graphattn compare``: attention patterns measured side by side."""
from __future__ import annotations

import argparse
from pathlib import Path

from graphattn.cli.common import int_list, set_threads

__all__ = ["register"]


def register(sub) -> None:
    """Add ``compare`` to the ``graphattn`` parser's subparsers."""
    p = sub.add_parser("compare", help="compare attention patterns: statistics, scaling, training",
                       description="Statistics and measured cost of patterns (--stats) and the same classifier "
                                   "trained under each pattern on ListOps (--train); both when neither is given. "
                                   "--graphs: the same GraphTransformer trained under each graph pattern on tree "
                                   "NeighborsMatch and a generated social graph.")
    _add_compare(p)
    p.set_defaults(func=_compare, parser=p)


def _add_compare(parser) -> None:
    parser.add_argument("--stats", action="store_true", help="pattern statistics and the measured cost of one layer")
    parser.add_argument("--train", action="store_true", help="train the same classifier under each pattern on ListOps")
    parser.add_argument("--graphs", action="store_true",
                        help="train the same GraphTransformer under graph, khop:2, expander, graph|expander|virtual "
                             "and dense (where it fits) on tree NeighborsMatch and a social graph")
    parser.add_argument("--quick", action="store_true", help="small sizes: the whole run in about 1.5 minutes of one core (see the README)")
    parser.add_argument("--patterns", metavar="SPEC,...", help="comma-separated pattern specs (e.g. dense,window:16)")
    parser.add_argument("--learned-spans", metavar="S,...",
                        help="--train also trains with a learned span of up to S positions (default: 8w; 'none': no row)")
    parser.add_argument("--lengths", help="comma-separated lengths n for --stats")
    parser.add_argument("--max-len", type=int, help="longest ListOps expression for --train (default 512; 128 with --quick)")
    parser.add_argument("--task", choices=["sparse", "lra", "multi30k"], default="sparse",
                        help="sparse: flat MAX/MIN whose value rests on ~3 digits anywhere (default); "
                             "lra: the Long Range Arena's nested distribution (needs far more steps); "
                             "multi30k: the Multi30k EN->DE recipe under each encoder and decoder pattern (--data)")
    parser.add_argument("--data", help="--task multi30k: the folder of the Multi30k .gz files")
    parser.add_argument("--time-limit", type=float, default=120.0,
                        help="--task multi30k: seconds of training per pattern (default: %(default)s)")
    parser.add_argument("--steps", type=int, help="--train: optimizer steps per pattern and seed (default 200)")
    parser.add_argument("--epochs", type=int,
                        help="--graphs: epochs per pattern and seed, on both tasks (default: 25 on the trees and 8 on "
                             "the social graph; 15 and 4 with --quick)")
    parser.add_argument("--seeds", type=int, help="seeds per pattern (default 2; 1 with --quick)")
    parser.add_argument("--threads", type=int,
                        help="torch's intra-op threads (torch.set_num_threads; default: torch's choice, but 1 with "
                             "--graphs and --task multi30k)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="--task multi30k: runs at a time, each in its own process with --threads threads "
                             "(use jobs x threads <= cores) (default: %(default)s)")
    parser.add_argument("--out", default="runs/compare", help="directory for tables and plots")
    parser.add_argument("--no-progress", action="store_true")


def _specs(text: str) -> list[str]:
    """The specs of ``--patterns``; an empty one (``--patterns ''``, ``a,,b``) is refused rather
    than read as "the default set"."""
    specs = [spec.strip() for spec in text.split(",")]
    if not all(specs):
        raise ValueError(f"--patterns must be comma-separated pattern specs (e.g. dense,window:16), got {text!r}")
    return specs


def _compare(args: argparse.Namespace) -> int:
    from graphattn import compare, patterns
    from graphattn.compare.training import LISTOPS_TASK, LRA_TASK
    from graphattn.utils.bench import keep_freed_memory

    if args.graphs:
        return _compare_graphs(args)
    if args.epochs is not None:
        raise ValueError("--epochs counts the epochs of --graphs; --train counts optimizer steps (--steps)")
    if args.task == "multi30k":
        return _compare_multi30k(args)
    if args.jobs != 1:
        raise ValueError("--jobs runs the patterns of --task multi30k in parallel; the other comparisons run in one process")
    if not (args.stats or args.train):
        args.stats = args.train = True
    for name in ("steps", "seeds", "max_len", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    set_threads(args.threads)
    chosen = {spec: patterns.parse(spec) for spec in _specs(args.patterns)} if args.patterns is not None else None
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    if args.stats:
        keep_freed_memory()  # process-wide, so here: see graphattn.utils.bench.keep_freed_memory
        lengths = int_list(args.lengths, "--lengths") if args.lengths else \
            ([256, 512, 1024, 2048] if args.quick else [512, 1024, 2048, 4096, 8192, 16384])
        print(compare.stats_report(chosen or compare.default_stats_patterns(16 if args.quick else 64), lengths,
                                   out_dir, progress))
    if args.train:
        max_len = args.max_len or (128 if args.quick else 512)
        settings = compare.TrainSettings(steps=args.steps or 200, max_len=max_len, min_len=min(32, max_len),
                                         num_train=2000 if args.quick else 4000, num_test=300 if args.quick else 500,
                                         task=dict(LISTOPS_TASK if args.task == "sparse" else LRA_TASK))
        if args.learned_spans == "none":
            spans = []
        elif args.learned_spans:
            spans = int_list(args.learned_spans, "--learned-spans")
        else:
            spans = [] if chosen else compare.default_learned_spans(max_len)
        seeds = list(range(args.seeds or (1 if args.quick else 2)))
        print(compare.train_report(chosen or compare.default_train_patterns(max_len), seeds, settings, out_dir,
                                   args.task, spans, progress))
    print(f"\nwrote tables and plots under {out_dir}/")
    return 0


def _compare_multi30k(args: argparse.Namespace) -> int:
    from graphattn.compare.translation import translation_report
    from graphattn.text.multi30k import DECODER_PATTERNS, ENCODER_PATTERNS, compare_patterns

    if not args.data:
        raise ValueError("--task multi30k needs --data DIR (the Multi30k .gz files)")
    set_threads(args.threads if args.threads is not None else 1)
    specs = [s.strip() for s in args.patterns.split(",")] if args.patterns else None
    encoders = [s for s in specs if "causal" not in s] if specs else ENCODER_PATTERNS
    decoders = ["causal"] + [s for s in specs if "causal" in s] if specs else DECODER_PATTERNS
    rows = compare_patterns(args.data, Path(args.out) / "multi30k", args.time_limit, encoder_patterns=encoders,
                            decoder_patterns=decoders, progress=not args.no_progress, jobs=args.jobs,
                            threads=args.threads or 1)
    settings = {"time_limit": args.time_limit, "threads": args.threads or 1, "jobs": args.jobs,
                "recipe": "graphattn.text.multi30k"}
    print(translation_report(rows, args.out, settings))
    print(f"\nwrote tables and plots under {args.out}/")
    return 0


def _compare_graphs(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from graphattn.compare.graphs import graph_report
    from graphattn.graphs.comparison import (GRAPH_PATTERNS, GraphCompareSettings, compare_graph_patterns,
                                             summarise_graph_runs)
    from graphattn.patterns import parse

    if args.steps is not None:
        raise ValueError("--graphs trains for epochs, not steps: use --epochs (--steps counts the optimizer steps "
                         "of --train)")
    for name in ("seeds", "threads", "epochs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")
    set_threads(args.threads if args.threads is not None else 1)
    specs = _specs(args.patterns) if args.patterns is not None else GRAPH_PATTERNS
    for spec in specs:
        parse(spec)  # refuse a bad name before any training
    settings = GraphCompareSettings(num_trees=600, tree_epochs=15, social_nodes=1500, social_epochs=4,
                                    dense_max_pairs=1_000_000) if args.quick else GraphCompareSettings()
    if args.epochs:  # on both tasks
        settings.tree_epochs = settings.social_epochs = args.epochs
    seeds = list(range(args.seeds or (1 if args.quick else 2)))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = compare_graph_patterns(specs, settings, seeds, progress=not args.no_progress)
    print(graph_report(summarise_graph_runs(runs), runs, {**asdict(settings), "seeds": seeds}, out_dir))
    print(f"\nwrote tables and plots under {out_dir}/")
    return 0

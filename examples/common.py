"""What the example scripts share: dataset options, friendly errors, the metrics printout."""

import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

from nn.checkpoint import CheckpointError  # noqa: E402
from nn.data import DataError  # noqa: E402
from nn.metrics import format_table  # noqa: E402
from nn.trainer import DivergedError  # noqa: E402

HONEST = ["precision_at_3", "recall_at_3", "micro_f1_at_3", "map", "macro_auc",
          "paper_accuracy"]


def add_data_args(parser):
    parser.add_argument("--data", help="the poster folder (train.csv + Images/); default "
                        "$POSTERS_DIR, then data/posters")
    parser.add_argument("--on-bad-image", choices=["stop", "skip"], default="stop",
                        help="a poster that cannot be read: stop with its name, or skip it "
                        "with a warning and a count (default: stop)")
    parser.add_argument("--cache-dir", help="where decoded posters are cached "
                        "(default $NN_CACHE_DIR or ~/.cache/nn-posters)")
    parser.add_argument("--workers", type=int, help="decoding threads (default: all cores)")


def honest_table(model_metrics, prior_metrics):
    """Model and prior side by side, honest metrics first, the paper's accuracy last."""
    pick = lambda m: {k: m[k] for k in HONEST}  # noqa: E731
    return format_table({"model": pick(model_metrics), "prior": pick(prior_metrics)})


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB


def run(main):
    """Run main(); a user's mistake becomes one line on stderr and exit status 2."""
    try:
        sys.exit(main())
    except (DataError, CheckpointError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except DivergedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as exc:
        print(f"\n{exc or 'interrupted'}", file=sys.stderr)
        sys.exit(130)

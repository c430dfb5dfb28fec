"""The names of the files a run folder holds, spelt once: the lowest module, so that light readers (plots,
the pipeline's state, the experiments' tables) name them without importing the model-building code."""

CONFIG_FILE = "config.yaml"  # the resolved run config, as `ibrar train` reads it
METRICS_FILE = "metrics.jsonl"  # one line per epoch
INFO_PLANE_FILE = "info_plane.jsonl"  # HSIC(X, T) and HSIC(Y, T) per tapped layer
EVAL_FILE = "eval.json"  # what `ibrar eval` writes
# the GPU kit's whole-test-set piece of a paper-scale row, kept until AutoAttack's subset is merged into EVAL_FILE
# (bench/gpu/kit.py's EVAL_FULL, standard library only, is the same name; a test ties the two)
PARTIAL_EVAL_FILE = "eval-full.json"

"""The names of the files a run folder holds, spelt once: the lowest module, so that the run folder
(`ibrar.run_folder.RunFolder`, the only code that reads and writes them), the checkpoint format and the GPU kit
(standard library only) name them without importing each other."""

CONFIG_FILE = "config.yaml"  # the resolved run config, as `ibrar train` reads it
META_FILE = "meta.json"  # versions, hardware and seed of the first start, and each resumption
METRICS_FILE = "metrics.jsonl"  # one line per epoch
INFO_PLANE_FILE = "info_plane.jsonl"  # HSIC(X, T) and HSIC(Y, T) per tapped layer
EVAL_FILE = "eval.json"  # what `ibrar eval` writes (`ibrar.evaluation_record.Evaluation`)
# the GPU kit's whole-test-set piece of a paper-scale row, kept until AutoAttack's subset is merged into EVAL_FILE
# (bench/gpu/kit.py's EVAL_FULL, standard library only, is the same name; a test ties the two)
PARTIAL_EVAL_FILE = "eval-full.json"
EVAL_HISTORY_DIR = "eval-history"  # each eval.json a later `ibrar eval` of the folder replaced, kept by its date
GPU_CALLS_FILE = "gpu.json"  # the GPU kit's per-call minutes, when a run trained over several calls
CHECKPOINT_FILE = "checkpoint.pt"  # the latest state to resume from (weights, optimizer, schedule, RNG)
FINAL_FILE = "final.pt"  # the trained weights and mask
# the figures' inputs computed from the weights (`ibrar.figure_data`): what a GPU lease brings back instead of them
FEATURES_FILE = "tsne-features.npz"  # Figure 3's penultimate-layer features of seeded test images
CONFUSION_FILE = "confusion-pgd10.json"  # Table 5's counts of the classes PGD-10 examples land in
# a run's small files: what results/ keeps, an export carries and the GPU kit brings back (never the weights)
RECORDS = (CONFIG_FILE, META_FILE, METRICS_FILE, INFO_PLANE_FILE, EVAL_FILE, GPU_CALLS_FILE)

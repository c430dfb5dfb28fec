"""The `ibrar` command: thin; it parses arguments and calls the library.

Every error a user can cause (config, data, checkpoint, run folder, command line: an `IbrarError`) ends in
one message on stderr and exit code 2. Any other exception is a bug: its traceback is shown, exit code 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from ibrar import __version__
from ibrar.data.readers import DATASETS
from ibrar.errors import IbrarError
from ibrar.experiments import EXPERIMENTS, SCALES

EXIT_USAGE = 2
EXIT_BUG = 1
LISTS = ("models", "attacks", "methods", "experiments", "configs")


class UsageError(IbrarError, ValueError):
    """A command-line mistake."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would exit itself; we want one path for all errors
        raise UsageError(f"{self.prog}: {message}")


def _split_config_and_overrides(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    if config is not None and "=" in config and not Path(config).exists():
        return None, [config, *overrides]
    return config, overrides


def _check_attack_names(names: Sequence[str], where: str) -> None:
    from ibrar.attacks.registry import parse_attack_name

    for name in names:
        try:
            parse_attack_name(name)
        except ValueError as err:
            raise UsageError(f"{where}: {err}") from None


def _cmd_train(args: argparse.Namespace) -> int:
    from ibrar.config import load_config
    from ibrar.pipeline import EvalRequest, train_and_evaluate
    from ibrar.run_folder import RunFolder

    config_path, overrides = _split_config_and_overrides(args.config, args.overrides)
    if args.resume:
        run_dir = Path(args.resume)
        if config_path is not None:
            raise UsageError("ibrar train: give either CONFIG.yaml or --resume RUN_DIR, not both "
                             "(a resumed run keeps its own config.yaml)")
        config = RunFolder(run_dir).config(overrides)
    else:
        if config_path is None:
            raise UsageError("ibrar train: a CONFIG.yaml is needed (shipped ones are in configs/), "
                             "or --resume RUN_DIR")
        config = load_config(config_path, overrides)
        run_dir = Path(args.out) if args.out else Path("runs") / config.name
        # torchrun --max-restarts relaunches the same command after a failure: continue the run it started.
        if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0 and RunFolder(run_dir).config_file.is_file():
            args.resume = str(run_dir)
    if args.print_config:
        from ibrar.config import dump_config

        print(dump_config(config), end="")
        return 0
    if not args.no_eval:
        _check_attack_names(config.eval.attacks, "eval.attacks")
    evaluation = None if args.no_eval else EvalRequest(config.eval.attacks, config.eval.n)
    data_root = _data_root_of(run_dir, args.data_root) if args.resume else args.data_root
    result = train_and_evaluate(config, run_dir, data_root=data_root, evaluation=evaluation,
                                resume=bool(args.resume), overwrite=args.overwrite, quiet=args.quiet)
    from ibrar.distributed import launched_as_main

    if launched_as_main():  # under torchrun only rank 0 writes, and says so
        if result.table:
            print(result.table)
        print(f"run folder: {run_dir}")
    return 0


def _data_root_of(run: Path, given: str | None) -> str | None:
    """--data-root, else $IBRAR_DATA_ROOT, else the root the run recorded when it last trained (if still there)."""
    from ibrar.data import DATA_ROOT_ENV
    from ibrar.run_folder import RunFolder

    if given is not None or os.environ.get(DATA_ROOT_ENV) or not run.is_dir():
        return given
    recorded = RunFolder(run).recorded_data_root()
    if recorded is not None:
        print(f"data root: {recorded} (where {run} was trained; --data-root chooses another)", file=sys.stderr)
    return None if recorded is None else str(recorded)


def _n_examples(text: str) -> int | None:
    if text.strip().lower() == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of test examples or 'all', got {text!r}") from None


def _names(text: str | None, option: str, example: str) -> list[str] | None:
    """A comma-separated option (None when not given); given but naming nothing (`--only ,`) is a mistake."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise UsageError(f"{option}: expected comma-separated {example}, got {text!r}")
    return names


def _cmd_eval(args: argparse.Namespace) -> int:
    from ibrar.run_eval import evaluate_run, evaluation_folder

    attacks = _names(args.attacks, "--attacks", "attack names such as fgsm,pgd10")
    _check_attack_names(attacks or [], "--attacks")
    if args.robustbench_card is None and (args.card_field or args.card_dir != "."):
        raise UsageError("ibrar eval: --card-field and --card-dir go with --robustbench-card NAME")
    if args.robustbench_card is not None:  # checked now, not after hours of attacks
        from ibrar.interop import check_card_request

        check_card_request(args.robustbench_card, attacks, args.card_field)
    try:
        steps = [int(s) for s in args.steps.split(",")] if args.steps else None
    except ValueError:
        raise UsageError(f"--steps: expected comma-separated step counts such as 1,5,10, got {args.steps!r}") from None
    if steps is not None and min(steps) < 1:
        raise UsageError(f"--steps: expected step counts >= 1, got {args.steps!r}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size: expected a positive number, got {args.batch_size}")
    if sum(x is not None for x in (args.run, args.robustbench, args.model)) != 1:
        raise UsageError("ibrar eval: give a RUN_DIR (run folder, export folder or checkpoint), "
                         "--robustbench NAME or --model MODULE:CALLABLE, exactly one of them")
    model_only = {"--weights": args.weights, "--model-kwargs": args.model_kwargs, "--normalize": args.normalize,
                  "--output": args.output}
    if args.model is None and any(v is not None for v in model_only.values()):
        raise UsageError(f"ibrar eval: {', '.join(k for k, v in model_only.items() if v is not None)} go with "
                         "--model MODULE:CALLABLE")
    data_root = _data_root_of(Path(args.run), args.data_root) if args.run is not None else args.data_root
    common = {"data_root": data_root, "attacks": attacks, "n": args.n, "steps": steps, "seed": args.seed,
              "batch_size": args.batch_size, "quiet": args.quiet, "device": args.device,
              "large_eps_check": not args.no_large_eps_check}
    if args.model is not None:
        from ibrar.user_model import build_user_model, evaluate_model, parse_output

        if args.model_dir is not None:
            raise UsageError("ibrar eval --model: --model-dir goes with --robustbench NAME")
        model = build_user_model(args.model, args.weights, args.model_kwargs, args.normalize,
                                 parse_output(args.output))
        out_dir = Path(args.out or Path("runs") / f"model-{args.model.rpartition(':')[2]}")
        report = evaluate_model(model, dataset=args.dataset, out_dir=out_dir, name=args.model, **common)["table"]
    elif args.robustbench is not None:
        from ibrar.interop import evaluate_zoo_model

        if args.model_dir is None:
            raise UsageError("ibrar eval --robustbench: --model-dir DIR is needed (RobustBench's model_dir, "
                             "holding DIR/<dataset>/<threat_model>/NAME.pt)")
        out_dir = Path(args.out or Path("runs") / f"robustbench-{args.robustbench}")
        report = evaluate_zoo_model(args.robustbench, args.model_dir, out_dir, dataset=args.dataset,
                                    threat_model=args.threat_model, **common)
    else:
        if args.model_dir is not None:
            raise UsageError("ibrar eval: --model-dir goes with --robustbench NAME")
        out_dir = evaluation_folder(Path(args.run), args.out)
        report = evaluate_run(args.run, out_dir=out_dir, **common)
    print(report)
    if args.robustbench_card:
        print(f"RobustBench card: {_write_card(args, out_dir)}")
    return 0


def _write_card(args: argparse.Namespace, out_dir: Path) -> Path:
    from ibrar.config import build_config
    from ibrar.interop import parse_card_fields, robustbench_card, write_robustbench_card
    from ibrar.run_folder import RunFolder

    result = RunFolder(out_dir).require_evaluation()
    if args.robustbench is not None or args.model is not None:
        config = build_config({"data": {"name": args.dataset}})
        architecture = args.robustbench or args.model
    else:
        from ibrar.loading import load_trained

        _, config, _ = load_trained(args.run)
        architecture = f"{config.model.name} (width {config.model.width:g})"
    card = robustbench_card(result, config, architecture, parse_card_fields(args.card_field))
    return write_robustbench_card(card, args.robustbench_card, args.card_dir)


def _cmd_export(args: argparse.Namespace) -> int:
    from ibrar.export import export_run

    out = export_run(args.run, args.out_dir, overwrite=args.overwrite, name=args.name)
    print("\n".join(str(p) for p in sorted(out.iterdir())))
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from ibrar.experiments import build_experiment, run_commands, run_experiment

    experiment = build_experiment(args.experiment, args.scale, seeds=args.seeds)
    only = _names(args.only, "--only", "run or row names (`--print-commands` lists the runs)")
    if args.parallel is not None and args.launcher is not None:
        raise UsageError("ibrar reproduce: --parallel runs side by side on this machine and --launcher submits "
                         "jobs; give one")
    launcher_only = {"--partition": args.partition, "--time": args.time, "--gpus-per-job": args.gpus_per_job,
                     "--tasks-per-job": args.tasks_per_job, "--cpus-per-task": args.cpus_per_task,
                     "--array-parallelism": args.array_parallelism, "--wait": args.wait or None}
    if args.launcher is None and any(v is not None for v in launcher_only.values()):
        raise UsageError(f"ibrar reproduce: {', '.join(k for k, v in launcher_only.items() if v is not None)} "
                         "go with --launcher slurm or --launcher local")
    if args.print_commands:
        print("\n".join(run_commands(experiment, args.out, args.data_root, only)))
        return 0
    log = print  # the run-by-run lines are what a log wants: --quiet drops the bars only
    if args.parallel is not None:
        from ibrar.experiments.parallel import run_parallel

        folder = run_parallel(experiment, args.parallel, args.out, data_root=args.data_root, only=only, log=log)
    elif args.launcher is not None:
        from ibrar.experiments.launch import LaunchOptions, launch_experiment

        options = LaunchOptions(args.launcher, partition=args.partition,
                                time_min=args.time if args.time is not None else LaunchOptions.time_min,
                                gpus_per_job=args.gpus_per_job, tasks_per_job=args.tasks_per_job,
                                cpus_per_task=args.cpus_per_task, array_parallelism=args.array_parallelism,
                                wait=args.wait)
        folder = launch_experiment(experiment, options, args.out, data_root=args.data_root, only=only, log=log)
    else:
        folder = run_experiment(experiment, args.out, data_root=args.data_root, quiet=args.quiet, log=log,
                                only=only)
    if (folder / "results.md").is_file():
        print((folder / "results.md").read_text())
    return 0


def _cmd_fetch_assemble(args: argparse.Namespace) -> int:
    from ibrar.loading import load_trained
    from ibrar.shards import assemble, read_manifest

    manifest = read_manifest(args.dirs)
    into = Path(args.into) if args.into else Path("runs") / manifest.get("run", "fetched")
    target = assemble(args.dirs, into / manifest["file"])
    bundle, config, _state = load_trained(into)  # it must load: a checkpoint that does not is no use here
    params = sum(p.numel() for p in bundle.model.parameters())
    print(f"{into / target['file']}: {target['count']} shards, sha256 {target['sha256'][:16]}... checked; "
          f"loads as {config.model.name} ({params:,} parameters)")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    if args.what == "models":
        from ibrar.models import list_models

        names = list_models()
    elif args.what == "attacks":
        from ibrar.attacks.registry import attack_names

        names = attack_names()
    elif args.what == "methods":
        from ibrar.methods import METHODS

        names = sorted(METHODS)
    elif args.what == "experiments":
        names = list(EXPERIMENTS)
    else:
        from ibrar.config import shipped_configs

        names = shipped_configs()
    print("\n".join(names))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from ibrar import plots

    runs = args.runs
    stem = args.out or f"{args.kind}"
    if args.kind in ("tsne", "confusion") and args.n is not None and args.n < 2:
        raise UsageError(f"ibrar plot: --n expects at least 2 examples, got {args.n}")
    if args.kind == "confusion":
        from ibrar.figure_data import confusion_of

        if len(runs) != 1:
            raise UsageError("ibrar plot confusion: give exactly one RUN_DIR")
        root = _data_root_of(Path(runs[0]), args.data_root)
        paths = plots.plot_confusion(confusion_of(runs[0], data_root=root, n=args.n or 1000), stem)
    elif args.kind == "tsne":
        from ibrar.figure_data import features_of

        dirs = plots.run_dirs_of(runs)
        features = [features_of(d, data_root=_data_root_of(Path(d), args.data_root), n=args.n or 500) for d in dirs]
        paths = plots.plot_tsne(features, stem, labels=plots.run_labels(dirs, None))
    else:
        paths = plots.PLOT_KINDS[args.kind](runs, stem)
    print("\n".join(str(p) for p in paths))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ibrar import report

    if args.action == "collect":
        if not args.runs:
            raise UsageError("ibrar report collect: give one or more finished RUN_DIRs")
        for run in args.runs:
            print(report.collect_run(run, args.into))
        return 0
    if args.runs or args.into:
        raise UsageError("ibrar report: RUN_DIRs and --into belong to `ibrar report collect`")
    if args.check and args.figures:
        raise UsageError("ibrar report: --check checks the tables and --figures redraws the figures; give one")
    if args.check:
        drifted = report.check_docs(args.root)
        print("\n".join(drifted) if drifted else "every generated table matches results/",
              file=sys.stderr if drifted else sys.stdout)
        return 1 if drifted else 0
    for path in report.write_docs(args.root):
        print(f"rewrote {path}")
    for name, drawn in (report.draw_figures(args.root) if args.figures else {}).items():
        print(f"drew {', '.join(str(p) for p in drawn)}" if isinstance(drawn, list) else f"not drawn {name}: {drawn}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ibrar", description="Train robust classifiers with IB-RAR and evaluate them honestly.")
    parser.add_argument("--version", action="version", version=f"ibrar {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("train", help="train one run from a YAML config (plus key=value overrides)")
    p.add_argument("config", nargs="?", help="YAML config: a file, or a shipped name (`ibrar list configs`)")
    p.add_argument("overrides", nargs="*", help="dotted overrides such as train.epochs=3")
    p.add_argument("--data-root", help="data folder (else $IBRAR_DATA_ROOT, else ~/.cache/ibrar-data)")
    p.add_argument("--out", help="run folder (default runs/<config name>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars (for logs): a line per epoch and per evaluation piece instead")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation (eval.attacks) after training")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (file, profile, overrides) and exit without training")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="robustness evaluation of a run folder, export folder or checkpoint, a "
                       "RobustBench zoo model or any PyTorch model (--model MODULE:CALLABLE --weights FILE)")
    p.add_argument("run", nargs="?", metavar="RUN_DIR_OR_CHECKPOINT",
                   help="a run folder, an `ibrar export` folder or a checkpoint file")
    p.add_argument("--data-root", help="the test set's data folder (default: where the run was trained, else its "
                   "data.root, else $IBRAR_DATA_ROOT, else ~/.cache/ibrar-data)")
    p.add_argument("--attacks", help="comma-separated (default fgsm,pgd10,cw,fab,nifgsm,autoattack; "
                                     "autoattack is the reference pyautoattack, standard version); also "
                                     "apgd-ce, apgd-t, fab-t, square, adaptive, ...")
    p.add_argument("--n", type=_n_examples, default=1000,
                   help="test examples: a seeded subset of N (default 1000), or 'all' for the whole test set")
    p.add_argument("--steps", help="attack-steps curve for PGD, CW and NI-FGSM, e.g. 1,5,10,20,50")
    p.add_argument("--seed", type=int, default=0, help="chooses the subset and seeds the attacks")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default: 256 for ibrar's attacks, the reference's own 250 for autoattack")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--quiet", action="store_true", help="no progress bars (for logs): a line per piece instead")
    p.add_argument("--no-large-eps-check", action="store_true",
                   help="skip the masking check that PGD at eps=0.5 reaches ~0%% accuracy")
    p.add_argument("--robustbench", metavar="NAME", help="evaluate this RobustBench zoo model instead (on disk "
                   "under --model-dir; nothing is downloaded)")
    p.add_argument("--model-dir", help="RobustBench's model_dir: NAME's weights are DIR/<dataset>/Linf/NAME.pt")
    p.add_argument("--model", metavar="MODULE:CALLABLE", help="evaluate any PyTorch classifier instead: "
                   "CALLABLE(**MODEL_KWARGS) from an importable module or path/to/file.py builds it; it takes "
                   "images in [0, 1] and returns logits (see --normalize, --output)")
    p.add_argument("--weights", metavar="FILE", help="--model's weights: a safetensors file or a state dict "
                   "saved with torch.save (read with weights_only=True, never unpickling code)")
    p.add_argument("--model-kwargs", metavar="JSON", help="keyword arguments for CALLABLE, e.g. "
                   "'{\"num_classes\": 10}'")
    p.add_argument("--normalize", metavar="MEAN/STD", help="put (x - mean) / std in front of a --model that "
                   "does not normalise its input itself, e.g. 0.4914,0.4822,0.4465/0.2471,0.2435,0.2616")
    p.add_argument("--output", metavar="INDEX_OR_KEY", help="the logits of a --model that returns a tuple "
                   "(an index, e.g. 0) or a dict (a key)")
    p.add_argument("--dataset", default="cifar10", choices=list(DATASETS),
                   help="the test set of a --model or zoo model (default cifar10; RobustBench: cifar10, cifar100; "
                        "imagefolder reads DATA_ROOT/test/<class>/<image>)")
    p.add_argument("--threat-model", default="Linf", help="the zoo model's threat model (Linf)")
    p.add_argument("--out", help="folder for the eval.json: of a RUN_DIR (default: beside its weights; an export "
                   "folder is left as shared, runs/eval-NAME), a zoo model (default runs/robustbench-NAME) or a "
                   "--model (default runs/model-CALLABLE)")
    p.add_argument("--robustbench-card", metavar="NAME", help="also write the evaluation as a RobustBench model "
                   "card model_info/<dataset>/Linf/NAME.json (needs the autoattack attack)")
    p.add_argument("--card-dir", default=".", help="folder that receives model_info/ (default: current folder)")
    p.add_argument("--card-field", action="append", default=[], metavar="KEY=VALUE",
                   help="a card field, e.g. name=\"paper title\", link=URL, authors=..., venue=... (repeatable)")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("export", help="write a finished run as a shareable folder (safetensors, config, card)")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--name", help="the model's name in its card (default: the run's config name)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an existing OUT_DIR")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("reproduce", help="run a paper experiment; results beside the paper's")
    p.add_argument("experiment", choices=EXPERIMENTS, help="the table or figure of the paper")
    p.add_argument("--scale", default="cpu", choices=list(SCALES),
                   help="smoke: about a minute on tiny ImageFolder data; cpu: CPU-sized twins; paper: exact")
    p.add_argument("--out", default="runs", help="runs go to OUT/<experiment>-<scale>/<run>/ (default runs)")
    p.add_argument("--data-root")
    p.add_argument("--seeds", type=int, default=1, help="runs per row with seeds 0..N-1 (mean ± std)")
    p.add_argument("--print-commands", action="store_true",
                   help="print one `ibrar train ... && ibrar eval ...` line per run instead of running them")
    p.add_argument("--only", help="comma-separated run or row names to run now (results once all have run)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars (for logs): a line per run, per epoch and per evaluation piece instead")
    p.add_argument("--launcher", choices=["slurm", "local"], help="run each run as a submitit job: on SLURM "
                   "(returns, or --wait; run again to collect results) or as local subprocesses (waits)")
    p.add_argument("--partition", help="SLURM partition")
    p.add_argument("--time", type=int, help="minutes per job (default 240); a job that times out "
                   "is requeued and resumes from its checkpoint")
    p.add_argument("--gpus-per-job", type=int, help="GPUs per job (default 1 on SLURM, 0 locally)")
    p.add_argument("--tasks-per-job", type=int, help="processes per job, joined by DDP (default: one per GPU)")
    p.add_argument("--cpus-per-task", type=int, help="CPU cores per task")
    p.add_argument("--array-parallelism", type=int,
                   help="jobs running at once (default 256 on SLURM, 1 locally)")
    p.add_argument("--wait", action="store_true", help="wait for the SLURM jobs, then write the results")
    p.add_argument("--parallel", type=int, metavar="N", help="run N of the runs side by side on this machine's "
                   "device, one process each (results equal to each run alone)")
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("fetch-assemble", help="join a checkpoint's sha256-checked shards (the GPU kit's fetch) "
                       "and load it")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="the folders the fetch calls brought back")
    p.add_argument("--into", help="run folder that receives final.pt (default runs/<the manifest's run>)")
    p.set_defaults(func=_cmd_fetch_assemble)

    p = sub.add_parser("list", help="name what ibrar has: models, attacks, methods, experiments, configs")
    p.add_argument("what", choices=LISTS)
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("plot", help="draw a paper figure from run folders (PNG and PDF)")
    p.add_argument("kind", choices=["steps", "tsne", "convergence", "infoplane", "beta", "confusion"])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="output file stem (default: KIND in the current folder)")
    p.add_argument("--data-root", help="data folder for tsne and confusion")
    p.add_argument("--n", type=int, help="test examples for tsne (default 500) and confusion (default 1000)")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("report", help="the documented tables from results/ (render, --check, collect RUN_DIR...)")
    p.add_argument("action", nargs="?", default="render", choices=["render", "collect"])
    p.add_argument("runs", nargs="*", metavar="RUN_DIR", help="finished run folders to collect")
    p.add_argument("--into", help="collect into this folder (default results/<experiment>-<scale>)")
    p.add_argument("--check", action="store_true", help="exit 1 naming each table that differs from results/")
    p.add_argument("--figures", action="store_true",
                   help="also redraw the figures that need only results/ into docs/figures/ (not checked)")
    p.add_argument("--root", default=".", help="the ibrar checkout whose docs and results/ are used")
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        # argparse stops filling `overrides` at the first option; key=value items after options still count.
        if extra and args.command == "train" and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return args.func(args)
    except IbrarError as err:  # bad input: one line; anything else is a bug and keeps its traceback
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as err:
        print(f"interrupted: {err}" if str(err) else "interrupted", file=sys.stderr)
        return 130
    except SystemExit as err:  # argparse's --help exits by itself; main returns the code instead
        return err.code if isinstance(err.code, int) else 0
    except Exception:  # a bug, not bad input: the traceback is what a report needs
        traceback.print_exc()
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())

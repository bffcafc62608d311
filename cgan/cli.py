"""`cgan`: the recipe's steps as one command line, for an Ascend host or a laptop, no Airflow.

    cgan export  --checkpoint G.pth --out cgan.onnx          # pth -> onnx -> onnxsim, checked
    cgan bins    --out bins/ --num-grids 10 --seed 0          # seeded input bins + .info file
    cgan infer   --model cgan.onnx --input bins/ --output out/ # msame layout + perf.json
    cgan infer   --model cgan.onnx --precision int8 ...        # int8 model built once, cached
    cgan convert --onnx cgan.onnx --soc-version Ascend310P3 --out om/ --cache ~/.cache/cgan
    cgan infer   --backend msame --model om/cgan.om --input bins/ --output out/ --device 0
    cgan grids   --input out/ --out grids/                    # 280x280 PNG per bin
    cgan quality --checkpoint G.pth --grids 20 --seed 0 --json  # parity + label accuracy
    cgan register-checkpoint models/G.pth                     # the Airflow DAG runs with it now
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from cgan import settings
from cgan.ascend.toolkit import CANN_HOMES, TOOLKIT_VAR
from cgan.errors import CganError
from cgan.paths import MODELS_DIR
from cgan.quality.classifier import DEFAULT_CLASSIFIER
from cgan.run.plan import CHECKPOINT_ASSET

DEFAULT_CHECKPOINT = MODELS_DIR / "cgan_generator.pth"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _progress(label: str):
    """Prints `label done/total` about every 10% (and at the end)."""
    state = {"last": -1}

    def report(done: int, total: int) -> None:
        step = max(1, total // 10)
        if done == total or done // step != state["last"]:
            state["last"] = done // step
            _say(f"{label} {done}/{total}")

    return report


def _emit(result: dict, as_json: bool, human: str) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(human)


def cmd_export(args) -> int:
    from cgan.recipe.export import export_onnx

    _say(f"exporting {args.checkpoint} -> {args.out} (batch {args.batch}, opset {args.opset})")
    result = export_onnx(args.checkpoint, args.out, batch=args.batch, opset=args.opset,
                         simplify=not args.no_simplify)
    _emit(result.as_dict(), args.json,
          f"wrote {result.onnx_path}: C={result.channels}, batch {result.batch}, opset "
          f"{result.opset}, simplified={result.simplified}, ONNX Runtime vs PyTorch max abs "
          f"error {result.max_abs_err:.3g}")
    return 0


def cmd_bins(args) -> int:
    from cgan.recipe.bins import write_bins, write_dataset_info

    paths = write_bins(args.out, args.num_grids, args.seed, start=args.start)
    info = write_dataset_info(args.out)
    _emit({"bins": [str(p) for p in paths], "info": str(info)}, args.json,
          f"wrote {len(paths)} input bin(s) to {args.out} (seed {args.seed}) and {info}")
    return 0


def _precision(args) -> str:
    """--precision, else CGAN_CPU_PRECISION for onnxruntime; other backends run fp32 only."""

    if args.backend == "onnxruntime":
        return args.precision or settings.cpu_precision()
    if args.precision not in (None, "fp32"):
        raise CganError(f"--precision {args.precision} needs --backend onnxruntime "
                        f"({args.backend} runs the model as it is)")
    return "fp32"


def _run_backend(args, model_or_checkpoint, input_dir, output_root, progress=None):
    precision = _precision(args)
    if args.backend == "onnxruntime":
        from cgan.runtimes.onnxruntime_runner import run_onnxruntime

        if precision != "fp32":
            _say(f"onnxruntime at {precision} (the quantized model is built on first use and cached)")
        return run_onnxruntime(model_or_checkpoint, input_dir, output_root, threads=args.threads,
                               warmup=args.warmup, progress=progress, precision=precision,
                               split_deconv=settings.ort_split_deconv())
    from cgan.runtimes.pytorch_runner import run_pytorch

    return run_pytorch(model_or_checkpoint, input_dir, output_root, threads=args.threads,
                       warmup=args.warmup, progress=progress)


def _run_msame(args):
    from cgan.ascend.msame import run_msame
    from cgan.ascend.toolkit import runtime_env

    if args.model is None:
        raise CganError("--backend msame needs --model X.om (make it with `cgan convert`)")
    env, where = runtime_env(args.toolkit_home)
    _say(f"msame on device {args.device}: {args.model} over {args.input} ({where})")
    return run_msame(args.model, args.input, args.output, device=args.device, loop=args.loop,
                     msame=args.msame, channels=args.channels, env=env, on_line=_say,
                     timeout_s=args.timeout)


def _run_ais_bench(args):
    from cgan.ascend.ais_bench import run_ais_bench

    if args.model is None:
        raise CganError("--backend ais_bench needs --model X.om (make it with `cgan convert`)")
    _say(f"ais_bench (Python API, in a process of its own) on device {args.device}: {args.model} over {args.input}")
    return run_ais_bench(args.model, args.input, args.output, device=args.device, warmup=args.warmup,
                         progress=_progress("infer"))


def cmd_infer(args) -> int:
    if args.backend == "msame":
        _precision(args)
        run = _run_msame(args)
        for line in run.warnings:
            _say(f"warning: msame printed an [ERROR] line that is not a failure (kept in perf.json): {line}")
    elif args.backend == "ais_bench":
        run = _run_ais_bench(args)
    else:
        source = args.model if args.backend == "onnxruntime" else args.checkpoint
        if source is None:
            flag = "--model X.onnx" if args.backend == "onnxruntime" else "--checkpoint G.pth"
            raise CganError(f"--backend {args.backend} needs {flag}")
        run = _run_backend(args, source, args.input, args.output, _progress("infer"))
    perf = run.perf
    where = f"{perf.threads} thread(s)" if perf.threads is not None else f"device {perf.device}"
    _emit({"output_dir": str(run.output_dir), "perf": json.loads(perf.to_json())}, args.json,
          f"wrote {len(run.outputs)} output bin(s) to {run.output_dir}\n"
          f"{perf.backend}: {perf.latency_ms['mean']:.2f} ms per call (median "
          f"{perf.latency_ms['median']:.2f}, p99 {perf.latency_ms['p99']:.2f}), "
          f"{perf.grids_per_s:.1f} grids/s, {perf.images_per_s:.0f} images/s, "
          f"{where}; perf record {run.output_dir / 'perf.json'}")
    return 0


def _store_uri(text: str) -> str:
    return text if "://" in text else str(Path(text).expanduser().resolve())


def _detect_soc_version() -> str:
    from cgan.ascend.npu_smi import read_npu_smi, soc_version_of

    chips = read_npu_smi()
    if chips is None:
        raise CganError("--soc-version auto needs a working `npu-smi info`; pass e.g. --soc-version Ascend310P3")
    soc = soc_version_of(chips)
    if soc is None:
        names = sorted({c.name for c in chips}) or ["no NPU listed"]
        raise CganError(f"cannot derive --soc-version from npu-smi (Name: {', '.join(names)}); pass it")
    _say(f"soc_version {soc} from npu-smi info")
    return soc


def cmd_convert(args) -> int:
    from cgan.ascend.atc import AtcOptions
    from cgan.ascend.atc_cache import DEFAULT_PREFIX, AtcCache, convert
    from cgan.ascend.toolkit import locate_toolkit
    from cgan.storage.files import atomic_write_bytes
    from cgan.storage.store import open_store

    soc = _detect_soc_version() if args.soc_version == "auto" else args.soc_version
    options = AtcOptions(soc, args.precision_mode, args.log_level).validate()
    toolkit = locate_toolkit(args.toolkit_home, atc_from_path=args.atc_from_path)
    cache = AtcCache(open_store(_store_uri(args.cache)), DEFAULT_PREFIX) if args.cache else None
    _say(f"converting {args.onnx} for {soc} (precision_mode {options.precision_mode}) with "
         f"{toolkit.atc}, toolkit {toolkit.version} (from {toolkit.version_source})")
    result = convert(args.onnx, args.out, options, toolkit=toolkit, cache=cache, name=args.name,
                     on_line=_say, timeout_s=args.timeout)
    log = atomic_write_bytes(Path(args.out) / "atc.log", result.log.encode())
    for note in result.notes:
        _say(f"note: {note}")
    _emit({"om": str(result.om_path), "cache_hit": result.cache_hit, "cache_key": result.cache_key,
           "toolkit_version": result.toolkit_version, "flags": result.flags, "log": str(log)},
          args.json,
          f"wrote {result.om_path} ({'cache hit, atc not run' if result.cache_hit else 'converted'}; "
          f"cache key {result.cache_key[:16]}...); atc output in {log}")
    return 0


def cmd_grids(args) -> int:
    from cgan.recipe.grids import write_grids

    paths = write_grids(args.input, args.out, _progress("grids"))
    _emit({"grids": [str(p) for p in paths]}, args.json,
          f"wrote {len(paths)} grid(s) to {args.out}")
    return 0


def cmd_quality(args) -> int:
    from cgan.quality.report import quality_report, write_report

    if (args.inputs is None) != (args.outputs is None):
        raise CganError("give both --inputs and --outputs, or neither (then --grids/--seed are used)")
    if args.inputs is not None:
        report = quality_report(args.checkpoint, args.inputs, args.outputs,
                                classifier_path=args.classifier, parity_grids=args.parity_grids,
                                precision=_run_precision(args.outputs))
    else:
        from cgan.recipe.bins import write_bins
        from cgan.recipe.export import export_onnx

        with tempfile.TemporaryDirectory(prefix="cgan-quality-") as tmp_dir:
            tmp = Path(tmp_dir)
            _say(f"quality: {args.grids} grid(s), seed {args.seed}, backend {args.backend}, in {tmp}")
            write_bins(tmp / "bins", args.grids, args.seed)
            source = args.checkpoint
            if args.backend == "onnxruntime":
                source = export_onnx(args.checkpoint, tmp / "cgan.onnx").onnx_path
            run = _run_backend(args, source, tmp / "bins", tmp / "out")
            report = quality_report(args.checkpoint, tmp / "bins", run.output_dir,
                                    classifier_path=args.classifier, parity_grids=args.parity_grids,
                                    precision=run.perf.tool.get("precision", "fp32"))
    if args.out:
        write_report(report, args.out)
    _emit(report, args.json,
          f"{report['precision']}: label accuracy {report['label_accuracy']:.4f} over "
          f"{report['digits_judged']} digits, parity max abs error {report['parity_max_abs_err']:.3g} "
          f"(mean {report['parity_mean_abs_err']:.2g}) "
          f"({report['parity_grids_checked']} grid(s) vs PyTorch), classifier hold-out accuracy "
          f"{report['classifier_holdout_accuracy']}"
          + (f"; wrote {Path(args.out) / 'quality.json'}" if args.out else ""))
    return 0


def _run_precision(output_dir) -> str | None:
    """The precision recorded in a run folder's perf.json (None when it names none)."""
    from cgan.recipe.outputs import find_run_dir
    from cgan.recipe.perf import PERF_NAME, read_record

    perf = find_run_dir(output_dir) / PERF_NAME
    if not perf.is_file():
        return None
    tool = read_record(perf).get("tool", {})
    return tool.get("precision", "fp32" if "onnxruntime" in tool or "torch" in tool else None)


def _check_checkpoint_here(checkpoint: str) -> str:
    """What could be checked of a checkpoint on this machine: a local one must be a readable
    generator state_dict; an s3:// one must exist, when this machine has S3 credentials."""
    import os

    if not checkpoint.startswith("s3://"):
        from cgan.recipe.checkpoint import load_state_dict
        from cgan.run.plan import resolve_local_checkpoint

        path = resolve_local_checkpoint(checkpoint)
        _, channels = load_state_dict(path)  # CheckpointError names what is wrong
        return f"{path} is a generator state_dict (C={channels})"
    if not os.environ.get("AWS_ACCESS_KEY_ID"):
        return "not checked here (no S3 credentials in this environment; the run's export task reads it)"
    import boto3

    from cgan.storage import s3

    bucket, key = checkpoint[5:].split("/", 1)
    # as `cgan`'s other S3 access (cgan.storage.store): AWS_* credentials, CGAN_S3_ENDPOINT_URL for MinIO/SeaweedFS
    client = boto3.session.Session().client("s3", endpoint_url=settings.s3_endpoint_url())
    try:
        found = s3.head(client, bucket, key)
    except s3.S3Error as exc:
        raise CganError(f"cannot check {checkpoint}: {exc}; pass --no-check to register it unchecked") from None
    if found is None:
        raise CganError(f"{checkpoint} does not exist ({s3.where(client, bucket, key)}): upload it first")
    return f"{checkpoint} exists ({found.get('ContentLength', '?')} bytes)"


def cmd_register_checkpoint(args) -> int:
    from cgan.integrations.airflow_api import AirflowApi, register_checkpoint
    from cgan.run.plan import check_checkpoint_root, validate_checkpoint

    checkpoint = validate_checkpoint(args.checkpoint)
    check_checkpoint_root(checkpoint, settings.checkpoint_roots())
    _say(f"checkpoint {checkpoint}: " + ("not checked (--no-check)" if args.no_check
                                        else _check_checkpoint_here(checkpoint)))
    api_settings = settings.airflow_api()
    api = AirflowApi(args.api_url or api_settings["url"], api_settings["user"], api_settings["password"])
    result = register_checkpoint(api, args.asset, checkpoint)
    _emit(result, args.json,
          f"registered {checkpoint}: event {result['event_id']} of asset {args.asset} (id {result['asset_id']}) "
          f"at {api.url}; cgan_generation runs with it once the scheduler sees the event")
    return 0


def cmd_set_latest(args) -> int:
    import boto3

    from cgan.publishing.publish import point_latest

    bucket = args.bucket or settings.publish_bucket()
    client = boto3.session.Session().client("s3", endpoint_url=settings.s3_endpoint_url())
    pointer = point_latest(client, bucket, args.run, log=_say)
    _emit(pointer, args.json, f"latest.json of s3://{bucket}/ names {pointer['manifest']}")
    return 0


def _int_at_least(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} must be {least} or more")
    return value


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def _non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def _add_runtime_flags(p: argparse.ArgumentParser, backends=("onnxruntime", "pytorch")) -> None:
    p.add_argument("--backend", choices=list(backends), default="onnxruntime",
                   help="runtime (default onnxruntime)")
    p.add_argument("--threads", type=_non_negative_int, default=1,
                   help="intra-op threads per call (default 1; 0 = all cores)")
    p.add_argument("--warmup", type=_non_negative_int, default=1,
                   help="warm-up calls, excluded from perf (default 1)")
    p.add_argument("--precision", choices=["fp32", "int8"],
                   help="onnxruntime: fp32, or int8 (static quantization, cached in CGAN_INT8_CACHE); "
                        "default CGAN_CPU_PRECISION or fp32")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cgan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("export", help="checkpoint -> ONNX (onnxsim, checked against PyTorch)")
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                   help=f"generator state_dict (default {DEFAULT_CHECKPOINT.relative_to(MODELS_DIR.parent)})")
    p.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    p.add_argument("--batch", type=_positive_int, default=100,
                   help="rows per call, a multiple of 100 (default 100, as the recipe's om)")
    p.add_argument("--opset", type=_positive_int, default=11, help="ONNX opset, 11..20 (default 11)")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxsim")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bins", help="seeded input bins (one per grid) + dataset info file")
    p.add_argument("--out", type=Path, required=True, help="folder for the bins")
    p.add_argument("--num-grids", type=_positive_int, required=True, help="how many grids (1..10000000)")
    p.add_argument("--seed", type=_non_negative_int, required=True, help="noise seed")
    p.add_argument("--start", type=_non_negative_int, default=0, help="first grid index (shards)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bins)

    p = sub.add_parser("infer", help="folder of bins -> output bins (msame layout) + perf.json")
    _add_runtime_flags(p, ("onnxruntime", "pytorch", "msame", "ais_bench"))
    p.add_argument("--model", type=Path, help="ONNX model (onnxruntime) or om (msame, ais_bench)")
    p.add_argument("--checkpoint", type=Path, help="generator state_dict (backend pytorch)")
    p.add_argument("--input", type=Path, required=True, help="folder of input bins")
    p.add_argument("--output", type=Path, required=True,
                   help="output root; each run gets a new timestamped folder in it")
    p.add_argument("--device", type=_non_negative_int, default=0, 
                   help="msame, ais_bench: ACL device id 0..255 (this host's NPUs from 0; default 0)")
    p.add_argument("--msame", default="msame", help="msame: its path, or a name on PATH (default msame)")
    p.add_argument("--loop", type=_positive_int, default=1,
                   help="msame: --loop 1..100 for a single .bin input (ignored by msame for a folder)")
    p.add_argument("--channels", type=int, choices=[1, 3],
                   help="msame: expected output channels (default: 1 or 3, the same for every bin)")
    p.add_argument("--timeout", type=float, help="msame: stop it after this many seconds")
    p.add_argument("--toolkit-home", default=None,
                   help=f"msame: source this folder's set_env.sh (default: {TOOLKIT_VAR}, else the first "
                        f"of {', '.join(map(str, CANN_HOMES))} holding one)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("convert", help="ONNX -> om with atc (Ascend host with the CANN toolkit)")
    p.add_argument("--onnx", type=Path, required=True, help="ONNX model from `cgan export`")
    p.add_argument("--soc-version", required=True,
                   help="atc --soc_version, e.g. Ascend310P3 ('Ascend' + npu-smi's Name), or auto")
    p.add_argument("--out", type=Path, required=True, help="folder for the om and atc.log")
    p.add_argument("--precision-mode", default="force_fp16",
                   help="atc --precision_mode (default force_fp16, atc's own default; "
                        "must_keep_origin_dtype keeps fp32)")
    p.add_argument("--log-level", default="error", help="atc --log: debug, info, warning, error, null")
    p.add_argument("--toolkit-home", default=None,
                   help=f"folder holding the CANN set_env.sh (default: {TOOLKIT_VAR}, else the first of "
                        f"{', '.join(map(str, CANN_HOMES))} holding one)")
    p.add_argument("--atc-from-path", action="store_true",
                   help="if set_env.sh is missing, use the atc on PATH with the current environment")
    p.add_argument("--cache", help="conversion cache: a folder or a store URI (file://, s3://); "
                                   "entries go under its atc-cache/")
    p.add_argument("--name", default="cgan", help="om name without .om (default cgan)")
    p.add_argument("--timeout", type=float, help="stop atc after this many seconds")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("grids", help="output bins -> 280x280 PNG grids")
    p.add_argument("--input", type=Path, required=True,
                   help="a run folder of output bins, or an output root holding one run")
    p.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_grids)

    p = sub.add_parser("quality", help="parity with PyTorch and label accuracy -> quality.json")
    _add_runtime_flags(p)
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="generator state_dict")
    p.add_argument("--grids", type=_positive_int, default=20,
                   help="grids to generate in a temporary folder (default 20)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="noise seed (default 0)")
    p.add_argument("--inputs", type=Path, help="judge existing runs: folder of input bins ...")
    p.add_argument("--outputs", type=Path, help="... and the output folder of their run")
    p.add_argument("--parity-grids", type=_positive_int, default=32,
                   help="grids compared with PyTorch, spread over the run (default 32)")
    p.add_argument("--classifier", type=Path, default=DEFAULT_CLASSIFIER, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help="folder to write quality.json into")
    p.add_argument("--json", action="store_true", help="print quality.json on stdout")
    p.set_defaults(func=cmd_quality)

    p = sub.add_parser("register-checkpoint",
                       help="tell Airflow about a new checkpoint: cgan_generation runs with it (asset event)")
    p.add_argument("checkpoint", help="a path (relative to the project root) or s3://bucket/key, under "
                                      "CGAN_CHECKPOINT_ROOTS")
    p.add_argument("--api-url", help="Airflow's api-server (default CGAN_AIRFLOW_API_URL or http://127.0.0.1:8080); "
                                     "user and password from CGAN_AIRFLOW_USER / CGAN_AIRFLOW_PASSWORD")
    p.add_argument("--asset", default=CHECKPOINT_ASSET, help=f"asset name (default {CHECKPOINT_ASSET})")
    p.add_argument("--no-check", action="store_true",
                   help="do not read the checkpoint here (e.g. a path that only the workers see)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_register_checkpoint)

    p = sub.add_parser("set-latest", help="point latest.json at a published run (e.g. away from a wrong date)")
    p.add_argument("run", help="the run's name under runs/ in the publish bucket (as the gallery lists it)")
    p.add_argument("--bucket", help="publish bucket (default CGAN_PUBLISH_BUCKET); endpoint CGAN_S3_ENDPOINT_URL, "
                                    "credentials as boto3 finds them")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_set_latest)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CganError, ValueError, FileNotFoundError) as exc:
        _say(f"cgan {args.command}: error: {exc}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

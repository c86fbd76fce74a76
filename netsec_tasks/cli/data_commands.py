"""The commands about data files: ``push-data``, ``validate``, ``drift``, ``make-sample`` and
``fetch-dataset``."""

from __future__ import annotations

import argparse
from pathlib import Path

from netsec_tasks.cli.common import (
    NOT_JUDGED,
    config_from_args,
    output_dir,
    output_file,
    print_json,
    reader_notes,
)
from netsec_tasks.errors import ConfigError, NetsecError


def cmd_push_data(args: argparse.Namespace) -> int:
    from netsec_tasks.sources.mongo import push_data

    cfg = config_from_args(args, **{"source.mongo.uri": args.uri, "source.mongo.collection": args.collection})
    result = push_data(args.csv, cfg, batch_size=args.batch_size, load_id=args.load_id)
    data = result.model_dump() if hasattr(result, "model_dump") else vars(result)
    print_json(data)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from netsec_tasks.dataset_schema import load_schema
    from netsec_tasks.table_io import load_table
    from netsec_tasks.validate import validate_frame, write_report

    cfg = config_from_args(args)
    schema = load_schema(args.schema or cfg.schema_path)
    table = load_table(args.file, **schema.read_options(labelled=True))
    reader_notes(table.notes)
    result = validate_frame(table.frame, schema, cfg.validation, source=str(args.file))
    out = output_dir(args.out or Path(cfg.workdir) / "validate")
    report = write_report(result, out, where=table.where)
    print(
        f"{'PASSED' if result.passed else 'FAILED'}: {len(result.clean)} valid rows, "
        f"{result.rows_invalid} quarantined; report: {report}"
    )
    for check in result.checks:
        if check.get("status") != "pass":
            print(f"  [{check.get('status')}] {check.get('name')}: {check.get('details', '')}")
    return 0 if result.passed else 1


def cmd_drift(args: argparse.Namespace) -> int:
    from netsec_tasks.drift import drift_between_files

    cfg = config_from_args(args)
    out = output_dir(args.out or Path(cfg.workdir) / "drift")
    record = drift_between_files(args.reference, args.current, cfg, out)
    figures = f"{record.drift_share:.0%} of {record.columns_tested} columns drifted" + (
        f" ({', '.join(record.drifted_columns)})" if record.drifted_columns else ""
    )
    if not record.judged:
        print(f"drift NOT JUDGED: {record.not_judged}")
        print(f"(on the {record.current_rows} current rows left: {figures})")
    else:
        print(f"drift {'DETECTED' if record.drift_detected else 'not detected'}: {figures}")
    print(f"report: {record.report_uri}\nhtml:   {record.html_uri}")
    if not record.judged:
        return NOT_JUDGED
    return 1 if record.drift_detected and args.fail_on_drift else 0


def cmd_make_sample(args: argparse.Namespace) -> int:
    from netsec_tasks.storage import atomic_path

    dataset = args.dataset or config_from_args(args).dataset
    if dataset == "intrusion_demo":
        from netsec_tasks.intrusion_sample import make_intrusion_sample

        if args.shift:
            raise NetsecError(
                "--shift applies to the phishing sample; for intrusion_demo use "
                "--holdout (the harder test file)"
            )
        if args.missing:
            raise NetsecError("--missing applies to the phishing sample")
        frame = make_intrusion_sample(args.rows, seed=args.seed, holdout=args.holdout)
        header = args.header  # its schema lists file_columns: header-less like the real files
        float_format = None
        out = args.out or "data/intrusion_demo_sample.csv"
    elif dataset == "phishing":
        from netsec_tasks.sample import make_sample

        if args.holdout:
            raise NetsecError("--holdout applies to the intrusion_demo sample")
        try:
            frame = make_sample(args.rows, seed=args.seed, shift=args.shift, missing=args.missing)
        except ValueError as exc:
            raise ConfigError(f"make-sample: {exc}") from None
        header = True
        out = args.out or "data/phishing_sample.csv"
        # A column with gaps is float (NaN) but holds whole numbers: write "1", not "1.0".
        float_format = "%g"
    else:
        raise NetsecError(
            f"no synthetic sample for data set {dataset!r}; samples exist for phishing and intrusion_demo"
        )
    with atomic_path(output_file(out)) as tmp:
        frame.to_csv(tmp, index=False, header=header, float_format=float_format)
    print(f"{len(frame)} rows written to {out}" + ("" if header else " (no header row)"))
    return 0


def cmd_fetch_dataset(args: argparse.Namespace) -> int:
    from netsec_tasks.datasets import fetch_dataset

    path = fetch_dataset(output_file(args.out), data_id=args.data_id)
    print(f"written to {path}")
    return 0

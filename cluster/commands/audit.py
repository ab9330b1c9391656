"""``rayfolio audit report|verify``: the audit log for a compliance officer.

``report`` renders serving/compliance.py's report of a window of days (Markdown, JSON or CSV) to
stdout or to a file; ``verify`` checks the hash chain in one line (exit 0 intact, 3 broken). Both
read the log without writing to it: a missing database is an error, never a new, empty log.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rayfolio.cluster.commands.common import iso_date

CHAIN_BROKEN = 3  # `audit verify`'s exit code when the chain does not hold


def register(commands) -> None:
    audit = commands.add_parser("audit", help="the audit log: compliance report and chain check")
    sub = audit.add_subparsers(dest="audit_command", required=True, metavar="AUDIT_COMMAND")
    report = sub.add_parser("report", help="recommendations, checks, approvals, experiments and gaps in a window")
    _source(report)
    report.add_argument("--from", dest="start", type=iso_date, metavar="DATE",
                        help="first day (UTC) of records, YYYY-MM-DD (default: the first record)")  # fmt: skip
    report.add_argument("--to", dest="end", type=iso_date, metavar="DATE",
                        help="last day (UTC) of records, YYYY-MM-DD, included (default: the last record)")  # fmt: skip
    report.add_argument("--format", choices=("md", "json", "csv"), default="md", help="default: md")
    report.add_argument("--out", type=Path, help="write the report to this file (default: stdout)")
    report.set_defaults(func=_report)
    verify = sub.add_parser("verify", help=f"check the hash chain (exit 0 intact, {CHAIN_BROKEN} broken)")
    _source(verify)
    verify.set_defaults(func=_verify)


def _source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--audit", help="audit log: SQLAlchemy URL or SQLite file (default: runs/<name>/audit.db)")
    parser.add_argument("--config", type=Path, help="run config naming runs/<name> (default: the built-in quickstart)")


def _open(args: argparse.Namespace):
    from rayfolio.cluster.config import ConfigError, load_config
    from rayfolio.serving.compliance import ComplianceError, open_audit

    audit = args.audit or str(load_config(args.config).run_dir / "audit.db")
    try:
        return open_audit(audit)
    except ComplianceError as err:
        raise ConfigError(str(err)) from None


def _report(args: argparse.Namespace) -> None:
    from rayfolio.cluster.config import ConfigError
    from rayfolio.serving import compliance, compliance_render

    if args.start and args.end and args.start > args.end:
        raise ConfigError(f"--from {args.start} is after --to {args.end}")
    report = compliance.compliance_report(_open(args), args.start, args.end)
    render = {"md": compliance_render.to_markdown, "json": compliance_render.to_json,
              "csv": compliance_render.to_csv}[args.format]  # fmt: skip
    text = render(report)
    if args.out is None:
        sys.stdout.write(text)
        return
    _write(args.out, text)
    chain = "intact" if report.database.chain.ok else f"BROKEN at record {report.database.chain.first_bad_seq}"
    print(f"{report.database.records_in_window} records reported from {report.database.url} (chain {chain}); "
          f"written: {args.out}")  # fmt: skip


def _write(path: Path, text: str) -> None:
    """Next to ``path``, then renamed into place: a reader never sees half a report."""
    from rayfolio.cluster.config import ConfigError

    partial = path.with_name(f".{path.name}.partial")
    try:
        # newline="": the CSV's line ends are written as they are.
        with partial.open("w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(partial, path)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise ConfigError(f"--out {path}: cannot be written ({err.strerror})") from None


def _verify(args: argparse.Namespace) -> int:
    audit = _open(args)
    check = audit.verify()
    shown = audit.engine.url.render_as_string(hide_password=True)
    if check.ok:
        print(f"audit chain intact: {check.records} records ({shown})")
        return 0
    print(f"audit chain BROKEN at record {check.first_bad_seq}: {check.reason} ({shown})")
    return CHAIN_BROKEN

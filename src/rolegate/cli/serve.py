"""``rolegate serve -c FILE``: run the proxy (master + workers) until SIGTERM."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rolegate.cli import add_config_argument
from rolegate.config import load_config
from rolegate.server.datadir import check_data_dir
from rolegate.server.rundir import RunDir, runtime_root


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("serve", help="run the proxy")
    add_config_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    base_dir = Path(args.config).resolve().parent
    # The data directory before anything else: a worker that cannot open the database would only die.
    check_data_dir(config, base_dir, config_file=args.config)
    # prometheus_client chooses once, when first imported, between memory and the per-process files that the
    # internal listener's /metrics reads; the master's modules import it. So the runtime directory is made and
    # named here, before they are imported: else the master's own values (the directory sync's gauges, its
    # audit's share of rolegate_audit_unwritable) stay in its memory and never reach /metrics or /readyz.
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before `rolegate serve` set PROMETHEUS_MULTIPROC_DIR")
    run_dir = RunDir.create(runtime_root(config, base_dir), config_file=args.config)
    try:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(run_dir.metrics)
        from rolegate.server.master import serve  # lazy: the server, aiohttp (see rolegate.cli); after the above

        return serve(args.config, config, run_dir, args.log_level)
    finally:
        run_dir.release()

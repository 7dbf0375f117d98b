"""``dynofa serve``: run the daemon in the foreground (systemd runs exactly this)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the daemon (foreground)",
        description="Run the dynofa daemon in the foreground. Without --config the embedded default is used: "
        "the bundled demo catalog on the CPU, the model-based policy, IPC sockets in the runtime directory.",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML configuration file (docs/configuration.md); default: $DYNOFA_CONFIG, else "
        "/etc/dynofa/config.yaml if it exists, else the embedded defaults",
    )
    parser.add_argument("--print-config", action="store_true", help="print the effective configuration and exit")
    parser.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from dynofa.config import default_config_path, load_config

    config = load_config(args.config or default_config_path())
    if args.print_config:
        json.dump(config.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    from service.daemon import run  # torch, governors and subnets load only now

    return run(config)

"""``python -m rolegate_lab start --workdir DIR [--rolegate-url URL]``: run the lab until Ctrl-C."""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from .errors import LabError
from .lab import Lab
from .process import log_tail


def _stop_on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def start(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir).resolve()
    lab = Lab(workdir, rolegate_url=args.rolegate_url, client_secret=args.client_secret,
              slapd_port=args.slapd_port, idp_port=args.idp_port, backend_port=args.backend_port)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    print(f"[lab] starting slapd, backend and IdP in {workdir}", flush=True)
    try:
        lab.start()
    except LabError as err:
        print(f"[lab] could not start: {err}\n[lab] next step: run scripts/setup.sh, then try again", file=sys.stderr)
        return 1
    try:
        json_path, env_path = lab.write_info()
        info = lab.info()
        print(f"[lab] LDAP     {info['ldap']['url']}  base {info['ldap']['base_dn']}  "
              f"bind {info['ldap']['bind_dn']} / {info['ldap']['bind_password']}")
        print(f"[lab] IdP      {info['oidc']['issuer']}  client {info['oidc']['client_id']}  "
              f"redirect {info['oidc']['redirect_uri']}")
        print(f"[lab] backend  {info['backend']['url']}")
        print(f"[lab] rolegate expected at {lab.rolegate_url}")
        print(f"[lab] wrote {json_path} and {env_path} (client secret inside)")
        print(f"[lab] demo logins (password '{info['demo_password']}'):")
        for user in info["users"]:
            flag = "  [DISABLED: rolegate must refuse]" if user["disabled"] else ""
            print(f"[lab]   {user['uid']:<8} {user['title']:<38} {', '.join(user['groups'])}{flag}")
        print("[lab] up; Ctrl-C to stop", flush=True)
        while True:
            time.sleep(1)
            for component in (lab.slapd, lab.backend, lab.idp):
                if not component.running:
                    print(f"[lab] {component.name} died:\n{log_tail(component.log_path)}", file=sys.stderr)
                    return 1
    except KeyboardInterrupt:
        print("[lab] stopping", flush=True)
        return 0
    finally:
        lab.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rolegate_lab", description="rolegate's local SSO lab")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start", help="start slapd + IdP + backend and stay up until SIGINT/SIGTERM")
    p.add_argument("--workdir", required=True, help="directory for data, logs, lab.json")
    p.add_argument("--rolegate-url", help="where rolegate will listen (default: a free 127.0.0.1 port)")
    p.add_argument("--client-secret", help="the rolegate client's secret (default: generated)")
    p.add_argument("--slapd-port", type=int)
    p.add_argument("--idp-port", type=int)
    p.add_argument("--backend-port", type=int)
    args = parser.parse_args(argv)
    return start(args)


if __name__ == "__main__":
    sys.exit(main())

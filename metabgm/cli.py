"""`metabgm`: the operator's command."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from metabgm_shared.contracts import IDENT_RE
from metabgm_shared.settings import Gateway, Secrets

from .evaluation.run import add_commands as add_evaluation_commands
from .local import Stack, instance


def _base_url(data_dir: Path) -> str:
    path = data_dir / "instance.json"
    return instance(data_dir)["base_url"] if path.exists() else "http://127.0.0.1:8000"


def mod_url(data_dir: Path) -> str:
    return f"{_base_url(data_dir)}/mod/{Secrets(data_dir).mod_key}"


def stop_on_signals() -> None:
    """Ctrl-C and SIGTERM both stop cleanly, even where the shell started us with SIGINT ignored
    (a background job): the children run in their own sessions and only we can stop them."""

    def stop(*_) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def cmd_up(args: argparse.Namespace) -> int:
    env = {"METABGM_PUBLIC_URL": args.public_url} if args.public_url else {}
    stack = Stack(data_dir=args.data_dir, port=args.port, host=args.host, env=env)
    stop_on_signals()
    started = time.monotonic()
    try:
        stack.start()
        print(f"MetaBGM is up in {time.monotonic() - started:.1f} s at {stack.base_url}")
        print(f"  health:   {stack.base_url}/healthz")
        print(f"  metrics:  {stack.base_url}/metrics (gateway)")
        for stage, port in stack.metrics_ports.items():
            print(f"            http://127.0.0.1:{port}/metrics ({stage})")
        print(f"            all of them as Prometheus file_sd targets: {stack.data_dir}/scrape.json")
        print(f"  mod URLs: metabgm mod-url --player NAME --data-dir {stack.data_dir}  (one per player)")
        print(f"  logs:     {stack.data_dir}/logs/")
        print("Ctrl-C stops it.", flush=True)
        while True:
            stack.supervise()  # restarts what died; no probe and no part can stop `up`
            time.sleep(0.25)
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()


def cmd_mod_url(args: argparse.Namespace) -> int:
    print(mod_url(args.data_dir.resolve()))
    return 0


def cmd_collector_token(args: argparse.Namespace) -> int:
    if not IDENT_RE.match(args.name):
        print(f"error: {args.name!r} is not 1-64 letters, digits, '_', '.', '-'", file=sys.stderr)
        return 2
    secrets = Secrets(args.data_dir.resolve())
    print(secrets.collector_token if args.name == "default" else secrets.add_collector(args.name))
    return 0


def cmd_link(args: argparse.Namespace) -> int:
    from metabgm_gateway.deps import Links

    data_dir = args.data_dir.resolve()
    defaults = Gateway.model_fields
    server = args.server or os.environ.get("METABGM_MOD_SERVER_ID") or defaults["mod_server_id"].default
    bad = [x for x in (args.player, server) if not IDENT_RE.match(x)]
    if bad:
        print(f"error: {bad[0]!r} is not 1-64 letters, digits, '_', '.', '-'", file=sys.stderr)
        return 2
    # The token carries its own timestamp; the gateway applies the TTL when it checks it.
    links = Links.from_secret(Secrets(data_dir).link_secret, defaults["link_ttl_s"].default)
    print(links.url(_base_url(data_dir), server, args.player))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run

    stop_on_signals()
    try:
        return run(args.data_dir, args.out, args.duration, args.window_s, args.port)
    except KeyboardInterrupt:  # before the session started: the stack has stopped itself
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="metabgm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, fn, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--data-dir", type=Path, default=Path(".metabgm"), help="instance settings and secrets")
        p.set_defaults(fn=fn)
        return p

    up = command("up", cmd_up, "run the whole pipeline on embedded defaults")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--public-url", default="", help="how players and mods reach the gateway, if not host:port")
    command("mod-url", cmd_mod_url, "print the URL to put into the seed mod's URL setting")
    token = command("collector-token", cmd_collector_token, "print (and make) a collector's bearer token")
    token.add_argument("name", nargs="?", default="default")
    demo = command("demo", cmd_demo, "run the pipeline with a built-in multi-player session")
    demo.add_argument("--out", type=Path, default=Path("out"), help="soundtracks and session log go here")
    demo.add_argument("--duration", type=float, default=None, help="seconds; default: the whole script")
    demo.add_argument("--window-s", type=float, default=8.0, help="seconds between windows")
    demo.add_argument("--port", type=int, default=8000)
    link = command("link", cmd_link, "print a listen link for one player")
    link.add_argument("player")
    link.add_argument("--server", help="server id (default: the mod's server, METABGM_MOD_SERVER_ID)")
    add_evaluation_commands(command)  # eval, record, label, train

    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())

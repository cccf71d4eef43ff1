"""`metabgm`: the operator's command.

Rules:
- Every subcommand is a `cmd_<name>` whose return value is the exit status: 0 done, 1 failed (a
  deployment refused or unreachable, `status` when players get no music), 2 a bad argument, 130
  `demo` interrupted before its session started.
  `build_parser` gives each one `--data-dir` (default `.metabgm`) and its --help from help.py.
- Player names, collector names and server ids are checked against `IDENT_RE` (1-64 letters,
  digits, '_', '.', '-') before anything is made or asked.
- Without `--url`, `link`, `mod-url` and `status` act on the `metabgm up` running on `--data-dir`
  (its instance.json), and links and mod URLs are signed with that data dir's secrets; the instance
  is looked up first, so no secrets are made for one that is not there. With `--url` they ask the
  deployment (remote.py), which keeps and uses its own secrets.
- A mod URL admits one player (`--player`). The shared one (`--shared`) is printed only locally,
  and the gateway accepts it only with `METABGM_MOD_SHARED_KEY=true`.
- `collector-token default` prints the operator's token, whose servers are
  `METABGM_DEFAULT_COLLECTOR_SERVERS`: it takes no `--server`. A named collector is made, or
  re-bound, in `--data-dir`'s collectors.json: bound to its `--server` ids (none given: the ones it
  has, or the server id NAME).
- `link` is for `--server`, else `METABGM_MOD_SERVER_ID`, else the gateway's default
  `mod_server_id`. The token carries its own timestamp; the gateway applies the TTL when it checks.
- `up` and `demo` stop cleanly on Ctrl-C and SIGTERM, even where the shell started them with SIGINT
  ignored: their children run in their own sessions and only this process can stop them. `up`
  supervises (restarts what died) until stopped, and stops the stack on its way out, whatever
  happened.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from metabgm_shared.contracts import IDENT_RE
from metabgm_shared.settings import Gateway, Secrets

from . import adapters, remote
from .evaluation.run import add_commands as add_evaluation_commands
from .help import texts as help_texts
from .local import Stack, instance


def _base_url(data_dir: Path) -> str:
    """The public address of the `metabgm up` running on this data dir. Without one there is
    nothing to sign for: a deployment keeps its own secrets and is asked with --url."""
    if not (data_dir / "instance.json").exists():
        raise SystemExit(
            f"error: no `metabgm up` is running on {data_dir}; for a deployment (compose, Kubernetes) "
            "pass --url URL --token TOKEN"
        )
    return instance(data_dir)["base_url"]


def mod_url(data_dir: Path, player: str | None = None) -> str:
    """One player's mod URL (its key admits that name only), or with no player the shared one,
    which the gateway accepts only with METABGM_MOD_SHARED_KEY=true."""
    from metabgm_gateway.modkeys import player_key

    base = _base_url(data_dir)  # first: never make secrets for an instance that is not there
    secret = Secrets(data_dir).mod_key
    return f"{base}/mod/{player_key(secret, player) if player else secret}"


def stop_on_signals() -> None:
    """Ctrl-C and SIGTERM both stop cleanly, even where the shell started us with SIGINT ignored
    (a background job): the children run in their own sessions and only we can stop them."""

    def stop(*_) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def cmd_up(args: argparse.Namespace) -> int:
    env = {"METABGM_PUBLIC_URL": args.public_url} if args.public_url else {}
    stack = Stack(data_dir=args.data_dir, port=args.port, host=args.host, env=env,
                  adapters=adapters.resolve(os.environ.get("METABGM_ADAPTERS"), args.no_adapters))  # fmt: skip
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
    if bool(args.player) == bool(args.shared):
        print("error: --player NAME (a URL for that player only), or --shared (every player's, off unless "
              "METABGM_MOD_SHARED_KEY=true): one of them", file=sys.stderr)  # fmt: skip
        return 2
    if args.player and not IDENT_RE.match(args.player):
        print(f"error: {args.player!r} is not 1-64 letters, digits, '_', '.', '-'", file=sys.stderr)
        return 2
    if args.url:
        return remote.run(remote.mod_url, args)
    print(mod_url(args.data_dir.resolve(), args.player))
    return 0


def cmd_collector_token(args: argparse.Namespace) -> int:
    if not IDENT_RE.match(args.name):
        print(f"error: {args.name!r} is not 1-64 letters, digits, '_', '.', '-'", file=sys.stderr)
        return 2
    bad = [s for s in args.server if not IDENT_RE.match(s)]
    if bad:
        print(f"error: server id {bad[0]!r} is not 1-64 letters, digits, '_', '.', '-'", file=sys.stderr)
        return 2
    secrets = Secrets(args.data_dir.resolve())
    if args.name == "default":
        if args.server:
            print("error: the default collector's servers are METABGM_DEFAULT_COLLECTOR_SERVERS", file=sys.stderr)
            return 2
        print(secrets.collector_token)
        return 0
    print(secrets.add_collector(args.name, tuple(args.server)))
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
    if args.url:
        return remote.run(remote.link, args, server)
    base = _base_url(data_dir)  # first: never make secrets for an instance that is not there
    # The token carries its own timestamp; the gateway applies the TTL when it checks it.
    links = Links.from_secret(Secrets(data_dir).link_secret, defaults["link_ttl_s"].default)
    print(links.url(base, server, args.player))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    url = args.url or _base_url(args.data_dir.resolve())
    ok, lines = remote.status(url)
    print(f"MetaBGM at {url}")
    print("\n".join(f"  {line}" for line in lines))
    return 0 if ok else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run

    stop_on_signals()
    try:
        served = adapters.resolve(os.environ.get("METABGM_ADAPTERS"), args.no_adapters)
        return run(args.data_dir, args.out, args.duration, args.window_s, args.port, served)
    except KeyboardInterrupt:  # before the session started: the stack has stopped itself
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metabgm",
        description=__doc__.split("\n\n")[0],  # the first line; the rules are the code's, not the operator's
        epilog="`metabgm <command> --help` says more, with an example.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, fn, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, **help_texts(name, help))
        p.add_argument("--data-dir", type=Path, default=Path(".metabgm"), help="instance settings and secrets")
        p.set_defaults(fn=fn)
        return p

    def no_adapters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--no-adapters", action="store_true", help="serve the base model, without the committed "
                       "LoRA adapters (as METABGM_ADAPTERS=off; METABGM_ADAPTERS=DIR serves others)")  # fmt: skip

    up = command("up", cmd_up, "run the whole pipeline on embedded defaults")
    up.add_argument("--port", type=int, default=8000, help="the gateway's port")
    up.add_argument("--host", default="127.0.0.1", help="the address the gateway listens on")
    up.add_argument("--public-url", default="", help="how players and mods reach the gateway, if not host:port")
    no_adapters(up)
    mod = command("mod-url", cmd_mod_url, "print the URL to put into one player's seed mod URL setting")
    mod.add_argument("--player", help="the player name this URL admits (and no other)")
    mod.add_argument("--shared", action="store_true", help="the one URL for every player (needs opt-in)")
    remote.add_arguments(mod)
    token = command("collector-token", cmd_collector_token, "print (and make) a collector's bearer token")
    token.add_argument("name", nargs="?", default="default", help="the collector's name (default: default)")
    token.add_argument(
        "--server", action="append", default=[], help="a server id this collector may post for (repeatable; "
        "default: the server id NAME)"
    )  # fmt: skip
    demo = command("demo", cmd_demo, "run the pipeline with a built-in multi-player session")
    demo.add_argument("--out", type=Path, default=Path("out"), help="soundtracks and session log go here")
    demo.add_argument("--duration", type=float, default=None, help="seconds; default: the whole script")
    demo.add_argument("--window-s", type=float, default=8.0, help="seconds between windows")
    demo.add_argument("--port", type=int, default=8000, help="the gateway's port")
    no_adapters(demo)
    link = command("link", cmd_link, "print a listen link for one player")
    link.add_argument("player", help="the player's name in the game")
    link.add_argument("--server", help="server id (default: the mod's server, METABGM_MOD_SERVER_ID)")
    remote.add_arguments(link)
    status = command("status", cmd_status, "say whether players get music, and what to do if not")
    remote.add_arguments(status, token=False)
    add_evaluation_commands(command)  # eval, record, label, train
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())

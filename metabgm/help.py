"""What `metabgm <command> --help` says: a description of what the command does and for whom, every
option with its default, and an example to copy.

Rules:
- Every subcommand has an entry in DESCRIPTIONS and EXAMPLES (tests/metabgm/test_cli_help.py).
- Defaults are printed by the formatter from the parser itself, so they cannot drift from the code.
"""

from __future__ import annotations

import argparse
import textwrap

DESCRIPTIONS = {
    "up": "Run the whole pipeline on this machine on embedded defaults: Redis, the four stage workers, "
    "the embedded LLM and the gateway, restarted when one dies. Ctrl-C stops it. No GPU, no Docker.",
    "demo": "Run the pipeline with a built-in session of several players (plains, forest, ambush, storm, "
    "cave, Nether, End), show each player's scene and music live, and write each soundtrack as heard.",
    "link": "Print one player's listen link: the page in which that player hears their music. Without --url, "
    "for the `metabgm up` running on --data-dir; with --url, asked from a deployment (compose, Kubernetes), "
    "which signs it with its own secrets and answers on its public URL.",
    "mod-url": "Print the URL to put into the seed mod's URL setting of one player (it admits that player "
    "only). Without --url, for the local `metabgm up`; with --url, asked from a deployment.",
    "collector-token": "Print a collector's bearer token, making it on first use (kept in collectors.json in "
    "--data-dir). A named collector is bound to the game servers given with --server.",
    "status": "Say whether players get music from a MetaBGM (the local `metabgm up`, or --url), and if not, "
    "which part is missing and where to look. Exit status 0 when players get music, 1 otherwise.",
    "eval": "Score the narrator and describer on a reference set (BLEU, METEOR, ROUGE-L) with the embedded "
    "model, or a served base model and its LoRA adapters.",
    "record": "Record a running instance's scenes, narratives and descriptions as triples (player names "
    "pseudonymised), for labelling and fine-tuning.",
    "label": "Write a teacher model's reference narratives and descriptions for recorded triples; resumes "
    "where it stopped.",
    "train": "LoRA-fine-tune the narrator and describer, one adapter per stage: by default the packaged "
    "SmolLM2 on the committed corpus (data/finetune; a CPU is enough), or a Hugging Face model id on a GPU "
    "(the gpu extra). The adapters are what the LLM server loads on day N (docs/operations.md).",
}

EXAMPLES = {
    "up": "metabgm up --port 8000 --public-url https://music.example.org",
    "demo": "metabgm demo --duration 120 --out out/",
    "link": "metabgm link Steve\n  METABGM_COLLECTOR_TOKEN=... metabgm link Steve --url https://music.example.org",
    "mod-url": "metabgm mod-url --player Steve\n"
    "  METABGM_COLLECTOR_TOKEN=... metabgm mod-url --player Steve --url https://music.example.org",
    "collector-token": "metabgm collector-token survival --server survival-1",
    "status": "metabgm status --url https://music.example.org",
    "eval": "metabgm eval --limit 10",
    "record": "metabgm record --out scenes.jsonl --seconds 600",
    "label": "metabgm label scenes.jsonl --out labelled.jsonl --llm-url http://vllm:8000/v1 --model base",
    "train": "metabgm train --out adapters/\n"
    "  metabgm train labelled.jsonl --base meta-llama/Meta-Llama-3-8B-Instruct --out adapters/",
}


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the example's line breaks; appends each option's default unless its help names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        shown = default is not None and default is not False and default not in ([], "", argparse.SUPPRESS)
        if shown and action.option_strings and "default" not in text:
            text += " (default: %(default)s)"
        return text


def texts(name: str, summary: str) -> dict:
    """Keyword arguments for `add_parser(name, ...)`."""
    return {
        "help": summary,
        "description": textwrap.fill(DESCRIPTIONS[name], 100),
        "epilog": f"example:\n  {EXAMPLES[name]}",
        "formatter_class": Formatter,
    }

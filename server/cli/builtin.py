"""``lifelong builtin``: the embedded base models (``LIFELONG_BASE_MODEL=builtin:<preset>``).

``train`` builds a preset ahead of ``serve``, exactly as a first start would (the shipped
weights where the package has them, else the seeded recipe; same place under the data
directory), and prints where it is, the sha256 of its weights and its bootstrap accuracy,
so that two builds can be compared and a server started afterwards loads it in seconds.
``--rebuild`` trains from the recipe even where weights ship, and says whether the result
is the shipped file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated, Any

import typer

from server.cli.options import DataDir
from server.cli.render import print_json, say

app = typer.Typer(help="The builtin base models: train a preset ahead of serve.",
                  no_args_is_help=True)  # fmt: skip


def describe(final: Path) -> dict[str, Any]:
    """Path, weights sha256, parameters, bootstrap time and accuracy of a built model."""
    from learner.fsutil import sha256_file

    provenance = json.loads((final / "provenance.json").read_text())
    return {
        "model": provenance["model"],
        "path": str(final),
        "sha256": sha256_file(final / "model.safetensors"),
        "parameters": provenance["parameters"],
        "steps": provenance["steps"],
        "bootstrap_seconds": provenance["wall_seconds"],
        "eval_greedy_accuracy": provenance.get("eval_greedy_accuracy", {}),
    }


@app.command("train")
def train(
    preset: Annotated[str, typer.Option("--preset", help="Which preset to build.")] = "sturdy",
    data_dir: DataDir = None,
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild",
            help="Delete an earlier build and train it from the seeded recipe, even where the "
            "package ships its weights (then say whether they came out the same).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the facts as JSON.")] = False,
) -> None:
    """Build `builtin:PRESET` under the data directory (or find it built) and describe it."""
    from learner.builtin.config import PRESETS, BuiltinConfig
    from learner.builtin.model import MANIFEST, builtin_root, ensure_builtin_model, shipped_weights
    from server.process.settings import Settings

    if preset not in PRESETS:
        raise typer.BadParameter(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    root = data_dir if data_dir is not None else Settings().data_dir
    if rebuild:
        shutil.rmtree(builtin_root(root, preset), ignore_errors=True)
    config = BuiltinConfig.preset(preset)
    final = ensure_builtin_model(root, config, progress=not as_json, shipped=not rebuild)
    facts = describe(final)
    if (source := shipped_weights(config)) is not None:  # the final weights ship as built
        manifest = json.loads((source / MANIFEST).read_text())
        facts["shipped_sha256"] = manifest["final/model.safetensors"]
        facts["same_as_shipped"] = facts["sha256"] == facts["shipped_sha256"]
    if as_json:
        print_json(facts)
        return
    keys = ("model", "path", "sha256", "parameters", "steps", "bootstrap_seconds")
    for key in (*keys, "shipped_sha256", "same_as_shipped"):
        if key in facts:
            say(f"{key}: {facts[key]}")
    accuracy = facts["eval_greedy_accuracy"]
    say("accuracy: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(accuracy.items())))

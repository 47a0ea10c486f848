"""The `loragate` command line: serve, adapters …, eval.

The only module that prints: everything else logs.
"""

from __future__ import annotations

import enum
import getpass
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from server.cli import rollout
from server.cli.loadtest import app as loadtest_app
from server.cli.remote import DEFAULT_URL, NameArg, UrlOpt, VersionArg, admin, show_change
from server.cli.tables import audit_table, list_table, status_table
from server.errors import LoragateError
from server.store.base_model import BaseModelSpec, demo_base_config
from server.store.layout import ValidationLimits
from server.store.manifest import EvalReport, PromptTemplate
from server.store.store import AdapterStore
from server.store.validation import validate_version

app = typer.Typer(help="loragate: many LoRA adapters, one base model, served like releases.")
adapters_app = typer.Typer(help="Package, validate and manage adapter versions.")
app.add_typer(adapters_app, name="adapters")
app.add_typer(loadtest_app, name="loadtest")
console = Console()
err_console = Console(stderr=True)

DEMO_BASE_ID = "demo-base"
StoreOpt = Annotated[Path, typer.Option("--store", help="adapter store directory")]
BaseConfigOpt = Annotated[
    Path | None,
    typer.Option("--base-config", help="base model config.json (default: the demo base)"),
]
BaseIdOpt = Annotated[str, typer.Option("--base-id", help="id the engines serve the base as")]


class Output(enum.StrEnum):
    table = "table"
    json = "json"


OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="table, or json for scripts")]
WideOpt = Annotated[bool, typer.Option("--wide", help="more columns (needs a wide terminal)")]


def load_base(config: Path | None, base_id: str) -> BaseModelSpec:
    return BaseModelSpec.from_config_file(config or demo_base_config(), base_id)


def fail(exc: LoragateError) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {escape(exc.message)}")
    return typer.Exit(code=1 if exc.status < 500 else 2)


@app.command("serve")
def serve(
    config: Annotated[Path | None, typer.Option("--config", help="YAML settings file")] = None,
    host: Annotated[str | None, typer.Option("--host")] = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
    engine_url: Annotated[
        list[str] | None, typer.Option("--engine-url", help="an external vLLM engine (repeat)")
    ] = None,
    store_dir: Annotated[Path | None, typer.Option("--store")] = None,
) -> None:
    """Start the gateway (and its managed engines). With no options: the demo deployment."""
    from server import logs
    from server.api.server import DrainingServer, server_config
    from server.app import create_app
    from server.settings import Settings

    overrides: dict[str, Any] = {"host": host, "port": port, "store": store_dir}
    if engine_url:
        overrides["engines"] = [{"url": url} for url in engine_url]
    try:
        settings = Settings.load(config, **overrides)
    except (ValueError, OSError) as exc:
        err_console.print(f"[red]invalid configuration:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    if not settings.engines:
        settings = settings.with_demo_engine()
        err_console.print(
            "no engine configured: starting the demo engine (vLLM, demo base model). "
            "The first run builds the model (~30 s); the engine is ready in ~40 s."
        )
    logs.configure(settings.log_json)
    url = f"http://{settings.host}:{settings.port}"
    err_console.print(f"loragate on {url}  (store {settings.store}, base {settings.base_model})")
    err_console.print(
        f"  curl {url}/v1/completions -H 'Content-Type: application/json' "
        f"""-d '{{"model": "<adapter>", "prompt": "Hello", "max_tokens": 16}}'"""
    )
    app = create_app(settings)
    server = DrainingServer(
        server_config(app, settings),
        on_drain=lambda: _drain(app),
        delay_s=settings.drain_delay_s,
    )
    server.run()


def _drain(app: Any) -> None:
    """SIGTERM: from now on /readyz says 503; requests are still served for a while."""
    runtime = getattr(app.state, "runtime", None)
    if runtime is not None:
        runtime.draining = True
    err_console.print("draining: /readyz answers 503; stopping after the drain delay")


@app.command("eval")
def evaluate(
    model: Annotated[str, typer.Option("--model", help="name@version to evaluate")],
    dataset: Annotated[Path, typer.Option("--dataset", help="held-out JSONL: input, target")],
    url: Annotated[str, typer.Option("--url", envvar="LORAGATE_URL")] = "http://127.0.0.1:8000",
    store_dir: Annotated[Path, typer.Option("--store")] = Path("adapters"),
    dataset_id: Annotated[str | None, typer.Option("--dataset-id")] = None,
    metric: Annotated[str | None, typer.Option("--metric")] = None,
    base_model: Annotated[str, typer.Option("--base-model")] = DEMO_BASE_ID,
    baseline: Annotated[bool, typer.Option("--baseline/--no-baseline")] = True,
    max_tokens: Annotated[int, typer.Option("--max-tokens")] = 48,
    limit: Annotated[int | None, typer.Option("--limit")] = None,
    write: Annotated[bool, typer.Option("--write/--dry-run")] = True,
) -> None:
    """Send a held-out set through the gateway, score it, record evals/<dataset>.json."""
    import asyncio

    from server.releases import evaluation as ev
    from server.store.refs import AdapterRef

    ref = AdapterRef.parse(model)
    if ref.version is None:
        raise typer.BadParameter("evaluate an exact version: name@version", param_hint="--model")
    store = AdapterStore(store_dir, None)
    store.scan()
    version = store.version(ref.name, ref.version)
    dataset_id = dataset_id or f"{dataset.parent.name}-{dataset.stem}"
    metric = metric or ev.metric_for(dataset_id)
    examples = ev.load_examples(dataset, limit)
    token = os.environ.get("LORAGATE_API_KEY")

    def run(target: str, prompts: list[str]) -> ev.Scored:
        predictions = asyncio.run(
            ev.predict(url, target, prompts, max_tokens=max_tokens, api_key=token)
        )
        return ev.score(predictions, examples, metric)

    scored = run(model, [e.input for e in examples])  # the gateway applies the template
    # The base gets the same template, rendered here: a fair baseline.
    template = version.manifest.prompt_template
    base = run(base_model, [template.render(e.input) for e in examples]) if baseline else None
    result = ev.report(dataset_id, metric, model, scored, base)
    console.print_json(result.model_dump_json())
    if write:
        actor = os.environ.get("LORAGATE_ACTOR") or getpass.getuser()
        path = store.add_eval(ref.name, ref.version, result, actor=actor)
        console.print(f"recorded {path}")


@adapters_app.command("package")
def package(
    peft_dir: Annotated[Path, typer.Argument(help="PEFT output: adapter_config.json + weights")],
    store_dir: StoreOpt,
    name: Annotated[str, typer.Option("--name")],
    version: Annotated[str, typer.Option("--version")],
    template: Annotated[str, typer.Option("--template", help="completion template")] = "{input}",
    system: Annotated[str | None, typer.Option("--system", help="chat system prompt")] = None,
    eval_file: Annotated[Path | None, typer.Option("--eval", help="eval report JSON")] = None,
    dataset_id: Annotated[str, typer.Option("--dataset-id")] = "unspecified",
    origin: Annotated[
        str, typer.Option("--origin", help="where the data came from")
    ] = "unspecified",
    cleaning: Annotated[str, typer.Option("--cleaning")] = "",
    notes: Annotated[str, typer.Option("--notes")] = "",
    created_by: Annotated[str | None, typer.Option("--created-by")] = None,
    base_config: BaseConfigOpt = None,
    base_id: BaseIdOpt = DEMO_BASE_ID,
    max_rank: Annotated[int, typer.Option("--max-rank")] = 64,
) -> None:
    """Turn a PEFT training output into an immutable, validated store version."""
    base = load_base(base_config, base_id)
    store = AdapterStore(store_dir, base, ValidationLimits(max_lora_rank=max_rank))
    fields: dict[str, Any] = {
        "base_model": {"id": base.id, "config_sha256": base.config_sha256},
        "prompt_template": PromptTemplate(completion=template, system=system).model_dump(),
        "lineage": {"dataset_id": dataset_id, "origin": origin, "cleaning": cleaning},
        "created_by": created_by or os.environ.get("LORAGATE_ACTOR") or getpass.getuser(),
        "notes": notes,
    }
    try:
        if eval_file is not None:
            fields["eval"] = EvalReport.model_validate_json(eval_file.read_bytes()).model_dump()
        found = store.package(peft_dir, fields, name=name, version=version)
    except LoragateError as exc:
        raise fail(exc) from None
    console.print(f"registered [bold]{found.engine_name}[/bold] at {found.path}")


@adapters_app.command("validate")
def validate(
    path: Annotated[Path, typer.Argument(help="a version directory")],
    base_config: BaseConfigOpt = None,
    base_id: BaseIdOpt = DEMO_BASE_ID,
    max_rank: Annotated[int, typer.Option("--max-rank")] = 64,
) -> None:
    """Check every rule on a version directory; exit 1 naming the rule it broke."""
    path = path.resolve()
    try:
        report = validate_version(
            path,
            root=path.parent.parent,
            base=load_base(base_config, base_id),
            limits=ValidationLimits(max_lora_rank=max_rank),
        )
    except LoragateError as exc:
        raise fail(exc) from None
    for check in report.checks:
        console.print(f"[green]ok[/green]   {escape(check)}")
    for skipped in report.skipped:
        console.print(f"[yellow]skip[/yellow] {escape(skipped)}")
    console.print(f"{path}: valid (rank {report.rank}, {report.weights_bytes} bytes of weights)")


@adapters_app.command("list")
def list_adapters(
    store_dir: StoreOpt, output: OutputOpt = Output.table, wide: WideOpt = False
) -> None:
    """Adapters in a store directory: channels and versions (--wide: base, stable's evals)."""
    snap = AdapterStore(store_dir, None).scan()
    rows: list[dict[str, Any]] = []
    for adapter in snap.adapters.values():
        ch = adapter.channels
        stable = adapter.versions.get(ch.stable) if ch.stable else None
        evals = stable.evals() if stable else {}
        rows.append(
            {
                "name": adapter.name,
                "versions": list(adapter.versions),
                "stable": ch.stable,
                "previous": ch.previous,
                "canary": f"{ch.canary.version} ({ch.canary.weight:.0%})" if ch.canary else None,
                "base": stable.manifest.base_model.id if stable else None,
                "eval": ", ".join(f"{e.dataset}: {e.metric}={e.score:.3f}" for e in evals.values()),
            }
        )
    if output is Output.json:
        broken = [{"path": b.path, "error": b.error} for b in snap.broken]
        print(json.dumps({"adapters": rows, "broken": broken}, indent=2))
        return
    console.print(list_table(rows, wide))
    for entry in snap.broken:
        err_console.print(f"[yellow]broken[/yellow] {escape(entry.path)}: {escape(entry.error)}")


# --- release commands: drive a running gateway's admin API -------------------------------


@adapters_app.command("register")
def register(
    directory: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="version dir")],
    name: Annotated[str, typer.Option("--name")],
    version: Annotated[str, typer.Option("--version")],
    url: UrlOpt = DEFAULT_URL,
) -> None:
    """Upload a packaged version directory to a running gateway; it validates and registers."""
    with admin(url) as client:
        result = client.register(directory, name, version)
    console.print(
        f"registered [bold]{result['adapter']}@{result['version']}[/bold]: "
        f"{', '.join(result['files'])}"
    )


@adapters_app.command("promote")
def promote(
    name: NameArg,
    version: VersionArg,
    force: Annotated[bool, typer.Option("--force", help="past the eval gate (audited)")] = False,
    dataset: Annotated[str | None, typer.Option("--dataset", help="gate dataset")] = None,
    url: UrlOpt = DEFAULT_URL,
) -> None:
    """Make VERSION stable if its eval beats the stable's (prewarmed before the switch)."""
    with admin(url) as client:
        show_change(client.promote(name, version, force=force, dataset=dataset))


@adapters_app.command("rollback")
def rollback(name: NameArg, url: UrlOpt = DEFAULT_URL) -> None:
    """stable ← previous, instantly (the previous version is kept warm)."""
    with admin(url) as client:
        show_change(client.rollback(name))


adapters_app.command("canary")(rollout.canary)
adapters_app.command("shadow")(rollout.shadow)


@adapters_app.command("pin")
def pin(name: NameArg, version: VersionArg, url: UrlOpt = DEFAULT_URL) -> None:
    """Keep VERSION loaded on every engine (an operator pin in channels.json)."""
    with admin(url) as client:
        show_change(client.version_action(name, version, "pin"))


@adapters_app.command("unpin")
def unpin(name: NameArg, version: VersionArg, url: UrlOpt = DEFAULT_URL) -> None:
    """Remove an operator pin."""
    with admin(url) as client:
        show_change(client.version_action(name, version, "unpin"))


@adapters_app.command("retire")
def retire(name: NameArg, version: VersionArg, url: UrlOpt = DEFAULT_URL) -> None:
    """Take VERSION out of the serving set (kept on disk); refused for stable/previous/canary."""
    with admin(url) as client:
        result = client.retire(name, version)
    console.print(f"retired {name}@{version} → {result['retired_to']}")
    if result["still_loaded"]:
        console.print(f"still loaded (in use) on {', '.join(result['still_loaded'])}")


@adapters_app.command("audit")
def audit(
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
    url: UrlOpt = DEFAULT_URL,
    output: OutputOpt = Output.table,
    wide: WideOpt = False,
) -> None:
    """The last LIMIT changes: when, what, from/to, who (--wide: forced, detail)."""
    with admin(url) as client:
        entries = client.audit(limit)
    if output is Output.json:
        print(json.dumps(entries, indent=2))
        return
    console.print(audit_table(entries, wide))


@adapters_app.command("status")
def status(
    url: UrlOpt = DEFAULT_URL, output: OutputOpt = Output.table, wide: WideOpt = False
) -> None:
    """Every adapter version of a running gateway: channel, validation, residency, pins
    (--wide: validation detail, evals)."""
    with admin(url) as client:
        listing = client.status()
    if output is Output.json:
        print(json.dumps(listing, indent=2))
        return
    console.print(status_table(listing, wide))
    for engine, info in listing["engines"].items():
        state = "up" if info["up"] else "[red]down[/red]"
        console.print(f"{engine}: {state}, {len(info['slots'])}/{info['capacity']} slots used")


if __name__ == "__main__":
    app()

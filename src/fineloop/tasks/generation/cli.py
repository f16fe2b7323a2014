"""`fineloop generate PROJECT "prompt"`: ask a running server's generation project.

The model is served by the server (FINELOOP_URL), so this is a client like `fineloop
index`: it prints the reply on stdout, and on stderr the interaction id to attach feedback
to, with the version that answered.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from fineloop.cli.common import DEFAULT_URL, ApiKey, ServerUrl, err_console, server_client


def generate(
    project: Annotated[str, typer.Argument(help="A generation project.")],
    prompt: Annotated[str, typer.Argument(help="What to ask (one user message).")],
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", help="Most tokens to generate.")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="0 is greedy (the default); higher samples.")
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="A version or alias (default: routed, the champion).")
    ] = None,
    system: Annotated[
        str | None, typer.Option(help="A system message sent before the prompt.")
    ] = None,
    url: ServerUrl = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Generate a reply with the project's served model and log it as an interaction."""
    messages = [{"role": "user", "content": prompt}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    sampling: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
    sampling = {k: v for k, v in sampling.items() if v is not None}
    with server_client(url, api_key) as client:
        reply = client.generate(project, messages, version=version, **sampling)
    typer.echo(reply["text"])
    ended = "cut at max tokens" if reply["finish_reason"] == "length" else "complete"
    err_console.print(
        f"interaction {reply['interaction_id']} ({reply['model_version']}, {ended})",
        highlight=False,
    )

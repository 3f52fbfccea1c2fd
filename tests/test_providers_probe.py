"""`lemming models`: probing each model key against the local servers."""

from __future__ import annotations

import argparse
import io
import json

from rich.console import Console

from lemming.engine.providers.probe import probe_models
from lemming.tui.cli.models import models_command
from lemming.engine.providers.registry import ProviderRegistry
from tests.support.servers import AnthropicServer, OllamaServer, OpenAIServer, closed_port
from lemming.engine.resume import ModelSpec

KEY = "sk-test-4f9c2a7b1e"


def specs(oa: OpenAIServer, an: AnthropicServer, ol: OllamaServer) -> dict[str, ModelSpec]:
    return {
        "gpt": ModelSpec(provider="openai", model_name="gpt-test", base_url=oa.base_url, api_key_env="OA_KEY"),
        "gpt-missing": ModelSpec(provider="openai", model_name="gpt-nope", base_url=oa.base_url, api_key_env="OA_KEY"),
        "claude": ModelSpec(provider="anthropic", model_name="claude-test", base_url=an.base_url, api_key_env="AN_KEY"),
        "claude-badkey": ModelSpec(provider="anthropic", model_name="claude-test", base_url=an.base_url, api_key_env="WRONG_KEY"),
        "llama": ModelSpec(provider="ollama", model_name="llama3.2", base_url=ol.base_url),
        "llama-missing": ModelSpec(provider="ollama", model_name="qwen9:7b", base_url=ol.base_url),
        "down": ModelSpec(provider="openai", model_name="x", base_url=f"http://127.0.0.1:{closed_port()}/v1"),
        "nokey": ModelSpec(provider="anthropic", model_name="claude-test", api_key_env="UNSET_KEY_VAR"),
    }


ENV = {"OA_KEY": KEY, "AN_KEY": KEY, "WRONG_KEY": "sk-wrong-93b1d0c4e2"}


async def test_probe_models_reports_each_key():
    with OpenAIServer(api_key=KEY) as oa, AnthropicServer(api_key=KEY) as an, OllamaServer() as ol:
        reg = ProviderRegistry(specs(oa, an, ol), env=ENV)
        try:
            results = {k: r for k, _, r in await probe_models(reg, timeout=3.0)}
        finally:
            await reg.aclose()
    assert results["gpt"].ok and results["claude"].ok and results["llama"].ok and results["sim"].ok
    assert not results["gpt-missing"].ok and "gpt-test" in results["gpt-missing"].detail
    assert not results["claude-badkey"].ok and results["claude-badkey"].detail.startswith("auth")
    assert not results["llama-missing"].ok and "ollama pull qwen9:7b" in results["llama-missing"].detail
    assert not results["down"].ok and results["down"].detail.startswith("connection")
    assert not results["nokey"].ok and "UNSET_KEY_VAR is not set" in results["nokey"].detail
    assert all(r.latency_ms is not None for k, r in results.items() if k not in ("nokey",))
    everything = json.dumps({k: r.detail for k, r in results.items()})
    assert KEY not in everything and ENV["WRONG_KEY"] not in everything
    # Probes list models; they never ask for a completion.
    assert not oa.chat_requests and not an.chat_requests and not ol.chat_requests


async def test_probe_that_hangs_is_bounded_by_the_timeout():
    from tests.support.servers import Behaviour

    with OpenAIServer() as oa:
        oa.script(Behaviour.hang(5, path="/v1/models"))
        reg = ProviderRegistry({"gpt": ModelSpec(provider="openai", model_name="gpt-test", base_url=oa.base_url)})
        try:
            [(_, _, res)] = await probe_models(reg, ["gpt"], timeout=0.2)
        finally:
            await reg.aclose()
    assert not res.ok and res.detail.startswith("timeout")


def test_models_command_prints_a_table_and_exit_code(tmp_path):
    with OpenAIServer(api_key=KEY) as oa, AnthropicServer(api_key=KEY) as an, OllamaServer() as ol:
        data = {k: s.model_dump(mode="json", exclude_none=True) for k, s in specs(oa, an, ol).items()}
        (tmp_path / "models.json").write_text(json.dumps(data))
        out = io.StringIO()
        console = Console(file=out, width=250, color_system=None)
        args = argparse.Namespace(org=tmp_path, timeout=3.0, no_probe=False, json=False, keys=[])
        code = models_command(args, env=ENV, console=console)
        text = out.getvalue()
        ok_args = argparse.Namespace(org=tmp_path, timeout=3.0, no_probe=False, json=False, keys=["gpt", "claude", "llama"])
        ok_code = models_command(ok_args, env=ENV, console=Console(file=io.StringIO()))
    assert code == 1  # some keys fail
    assert ok_code == 0
    for key in ("gpt", "claude", "llama", "down", "nokey"):
        assert key in text
    assert "OA_KEY (set)" in text and "UNSET_KEY_VAR (not set)" in text
    assert "FAIL" in text and "ok" in text
    assert KEY not in text


def test_models_command_lists_without_probing_and_rejects_unknown_keys(tmp_path, capsys):
    (tmp_path / "models.json").write_text(
        json.dumps({"local": {"provider": "openai", "model_name": "m", "base_url": "http://127.0.0.1:9/v1"}})
    )
    args = argparse.Namespace(org=tmp_path, timeout=1.0, no_probe=True, json=True, keys=[])
    assert models_command(args, env={}) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["key"] for r in rows} == {"local", "sim"}
    bad = argparse.Namespace(org=tmp_path, timeout=1.0, no_probe=True, json=False, keys=["nope"])
    assert models_command(bad, env={}, console=Console(file=io.StringIO())) == 2


def _not_an_api_server(content_type: str, body: bytes):
    """A server on 127.0.0.1 that answers every request 200 with `body` as `content_type`
    (a web page, an event stream): no OpenAI-compatible API."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


async def test_a_server_that_answers_no_api_is_said_plainly():
    answers = {
        "html": ("text/html; charset=utf-8", b"<!doctype html>\n<html><body>Welcome to nginx!</body></html>",
                 "it sent text/html, starting '<!doctype html> <html><body>Welcome to nginx!"),
        "sse": ("text/event-stream", b"data: {broken\n\n", "it sent text/event-stream, starting 'data: {broken'"),
    }
    servers = {k: _not_an_api_server(ct, body) for k, (ct, body, _) in answers.items()}
    try:
        specs = {k: ModelSpec(provider="openai", model_name="m", base_url=f"http://127.0.0.1:{s.server_port}/v1")
                 for k, s in servers.items()}
        reg = ProviderRegistry(specs, env={})
        try:
            results = {k: r for k, _, r in await probe_models(reg, list(specs), timeout=3.0)}
        finally:
            await reg.aclose()
    finally:
        for s in servers.values():
            s.shutdown()
    for key, (_, _, said) in answers.items():
        detail = results[key].detail
        assert not results[key].ok
        assert detail.startswith(f"the server at {specs[key].base_url} did not answer as an OpenAI-compatible API: "), detail
        assert said in detail and "AttributeError" not in detail, detail


def test_models_help_says_what_the_exit_code_means():
    from lemming.tui.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    text = " ".join(sub.choices["models"].format_help().split())
    assert "Exit code 0 when every probed model answered, 1 when a probe failed, 2 on a models.json" in text

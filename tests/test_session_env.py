"""The test session runs without real provider keys (tests/conftest.py removes them)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import PROVIDER_VARIABLES, REPO, _api_key_env_names

CHECK = "tests/test_session_env.py::test_the_session_and_its_processes_hold_no_provider_key"


def test_the_session_and_its_processes_hold_no_provider_key() -> None:
    names = {*PROVIDER_VARIABLES, *_api_key_env_names()}
    assert "VLLM_API_KEY" in names  # named by docs/models.example.json
    assert not names & set(os.environ)
    child = subprocess.run([sys.executable, "-c", "import os; print('\\n'.join(os.environ))"], capture_output=True, text=True, check=True)
    assert not names & set(child.stdout.split())
    assert not [v for v in child.stdout.split() if v.endswith(("_API_KEY", "_API_TOKEN"))]


def test_keys_in_the_callers_environment_never_reach_a_test() -> None:
    env = {**os.environ, "OPENAI_API_KEY": "sk-real-looking", "ANTHROPIC_API_KEY": "sk-ant-x", "OLLAMA_HOST": "http://gpu:11434", "VLLM_API_KEY": "v", "OTHER_API_KEY": "o"}
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", CHECK],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout

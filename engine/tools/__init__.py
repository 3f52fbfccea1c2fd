"""An agent's tools: LeMMing's `memory_*`, `file_*`, `shell`, `create_agent`, `list_agents`
and `clock`, run inside the agent's turn on its own workspace.

* :mod:`~lemming.engine.tools.specs` — names, arguments and prompt text of each tool.
* :mod:`~lemming.engine.tools.files` — paths confined to the workspace; a turn's staged files.
* :mod:`~lemming.engine.tools.sandbox` — spawning, capping and killing programs (bubblewrap).
* :mod:`~lemming.engine.tools.shell` — the `shell` tool on a scratch copy of the files.
* :mod:`~lemming.engine.tools.create_agent` — new agents from `agents/agent_template/`.
* :mod:`~lemming.engine.tools.runner` — one turn's calls, each to a result the model sees.
"""

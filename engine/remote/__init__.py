"""A run served to other processes: a Unix socket speaking JSON lines (protocol.py),
the server the run hosts (server.py), its clients (client.py) and how they find each
other (endpoint.py). No Textual in here: the attached control room is one client."""

from lemming.engine.remote.client import ControlClient, RemoteEngine, RemoteError, Resync
from lemming.engine.remote.endpoint import EndpointError, Served, find_run, served_runs
from lemming.engine.remote.server import ControlServer

__all__ = ["ControlClient", "ControlServer", "EndpointError", "RemoteEngine", "RemoteError", "Resync", "Served", "find_run", "served_runs"]

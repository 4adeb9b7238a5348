"""Two libraries imported leaner than they import themselves, in the agent process only.

Only the agent's entry point (:mod:`edge.runner`) calls :func:`trim_imports`, before anything
else is imported; the CLI, tests and central import both libraries as usual. Together they take
~1.6 MB off an idle node's RSS (measured with bench/camera_probe.py's idle agent, docs/edge.md).

**prometheus_client without its HTTP servers.** The agent serves ``/metrics``
itself (:mod:`edge.metrics_http`: ``generate_latest`` on its own asyncio server), but
``import prometheus_client`` runs its ``exposition`` module, which imports ``http.server``,
``socketserver`` and ``wsgiref.simple_server`` at module level for ``start_http_server`` and
``start_wsgi_server`` (with ``html``, ``mimetypes`` and more in tow): ~0.8 MB.
:func:`import_prometheus_without_servers` imports the package while those modules are
stand-ins, then takes the stand-ins out of ``sys.modules``, so a later ``import http.server``
gets the real module. In the agent, prometheus_client's own HTTP servers raise
:class:`ServerUnavailable`; metric types, registries and ``generate_latest`` never touch them.

**pydantic without plugins.** The first validator pydantic builds imports its plugin loader,
which imports ``importlib.metadata`` (with ``zipfile``, ``csv``, ``importlib.resources``) and
scans every installed distribution for ``pydantic`` entry points: ~0.8 MB for plugins the edge
has none of. :func:`disable_pydantic_plugins` puts a loader in its place that finds none:
what ``PYDANTIC_DISABLE_PLUGINS=__all__`` does, without the import.

Private knowledge used (read from :data:`WRITTEN_FOR`): the names ``prometheus_client.exposition``
imports from those modules (:data:`STAND_INS`), and pydantic's ``pydantic.plugin._loader``
module with its ``get_plugins()``. An upgrade that imports another name fails the import loudly
(``ImportError``); tests/test_edge_idle_imports.py checks that the agent still serves its
metrics and validates its messages, and that the trimmed modules stay out of it.
"""

from __future__ import annotations

import sys
import types
from typing import Any, NoReturn

#: The versions the private names below were read from.
WRITTEN_FOR = {"prometheus-client": "0.26.0", "pydantic": "2.14.4"}

#: Module → the names prometheus_client.exposition imports from it, for its servers only.
#: (Its Pushgateway client's ``urllib.request`` stays real: paho imports it anyway.)
STAND_INS: dict[str, tuple[str, ...]] = {
    "http.server": ("BaseHTTPRequestHandler",),
    "socketserver": ("ThreadingMixIn",),
    "wsgiref.simple_server": ("make_server", "WSGIRequestHandler", "WSGIServer"),
}


class ServerUnavailable(RuntimeError):
    """prometheus_client's own HTTP servers are not loaded in the agent."""


def _refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise ServerUnavailable(
        "prometheus_client's HTTP servers are not loaded in the edge agent: "
        "it serves /metrics itself (edge.metrics_http)"
    )


def _stand_in(module: str, name: str) -> type:
    # A class, because exposition subclasses some of these; instances (and calls) refuse.
    return type(name, (), {"__init__": _refuse, "__module__": module})


def import_prometheus_without_servers() -> None:
    """Import prometheus_client with stand-ins for its server modules (module docstring).
    Does nothing if prometheus_client is already imported."""
    if "prometheus_client" in sys.modules:
        return
    placed = []
    for module, names in STAND_INS.items():
        if module in sys.modules:  # already really imported: exposition may as well use it
            continue
        stand_in = types.ModuleType(module, "stand-in (edge.lean_imports)")
        for name in names:
            setattr(stand_in, name, _stand_in(module, name))
        sys.modules[module] = stand_in
        placed.append(module)
    try:
        import prometheus_client  # noqa: F401
    finally:
        for module in placed:
            del sys.modules[module]


#: pydantic's plugin loader, imported by the first validator it builds.
PYDANTIC_PLUGIN_LOADER = "pydantic.plugin._loader"


def _no_plugins() -> tuple[()]:
    return ()


def disable_pydantic_plugins() -> None:
    """pydantic finds no plugins and never imports ``importlib.metadata`` for them (module
    docstring). Does nothing if the loader is already imported."""
    if PYDANTIC_PLUGIN_LOADER in sys.modules:
        return
    loader = types.ModuleType(PYDANTIC_PLUGIN_LOADER, "no plugins (edge.lean_imports)")
    loader.get_plugins = _no_plugins  # type: ignore[attr-defined]
    sys.modules[PYDANTIC_PLUGIN_LOADER] = loader


def trim_imports() -> None:
    """Both of the above; call before importing the agent."""
    disable_pydantic_plugins()
    import_prometheus_without_servers()

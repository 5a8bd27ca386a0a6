"""The dashboard's endpoints called in process, without TensorBoard's server or HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tensorboard.plugins import base_plugin
from werkzeug.test import Client
from werkzeug.wrappers import Response

from spectral_callbacks.dashboard.plugin import SpectraPlugin

Get = Callable[..., tuple[int, dict]]


def client_of(logdir: Path) -> Get:
    """``get(route, **parameters) -> (status, json)`` on a plugin over ``logdir``, without HTTP."""
    apps = SpectraPlugin(base_plugin.TBContext(logdir=str(logdir))).get_plugin_apps()

    def get(route: str, **parameters: object) -> tuple[int, dict]:
        response = Client(apps[route], Response).get(route, query_string=parameters)
        assert response.mimetype == "application/json"
        return response.status_code, json.loads(response.data)

    return get

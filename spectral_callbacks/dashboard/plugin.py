"""The "Spectra" tab of TensorBoard: a dynamic plugin that reads run files, not event files.

TensorBoard finds it through the package's ``tensorboard_plugins`` entry point; the tab is active
when a run file lies under the log directory. Its page is the static ES module in ``static/``
(no build step, no library from the network); its data come from the JSON endpoints below,
each of which checks every parameter (:mod:`.requests`) and resolves run and layer names only
against the files the catalog found (:mod:`.catalog`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from importlib import resources
from typing import Any

from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from ..runfile.reader import RunReader, open_run
from . import queries, requests
from .answers import AnswerCache, file_signature
from .catalog import Catalog, RunEntry, UnknownRunError
from .requests import InvalidRequestError

__all__ = ["PLUGIN_NAME", "SpectraPlugin"]

PLUGIN_NAME = "spectra"
PREPARED_HEATMAPS = 3  # the runs a 1280x800 window shows first, read before the page asks
_CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".txt": "text/plain"}
_logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, str]], bytes]


class SpectraPlugin(base_plugin.TBPlugin):
    """TensorBoard's Spectra dashboard: overview heatmaps, the ESD explorer and run comparison."""

    plugin_name = PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext, *, prepare: bool = True):
        logdir = getattr(context, "logdir", None)
        self._catalog = Catalog(logdir) if logdir else None
        self._answers = AnswerCache()
        self.preparing: threading.Thread | None = None
        if prepare and self._catalog is not None:
            self.preparing = threading.Thread(target=self._prepare, name="spectra-prepare", daemon=True)
            self.preparing.start()

    def _prepare(self) -> None:
        """Read, while the browser loads TensorBoard's page, what the tab shows first: the run
        listing and the first runs' heatmaps of the default metric (the answers are kept)."""
        try:
            self._runs({})
            for entry in self._catalog.runs()[:PREPARED_HEATMAPS]:
                self._overview({"run": entry.name})
        except Exception as error:  # noqa: BLE001 - a head start only: the requests report failures
            _logger.debug("Spectra: preparing the first answers failed: %s", error)

    def is_active(self) -> bool:
        """True when a readable run file lies under the log directory."""
        if self._catalog is None:
            return False
        try:
            return self._catalog.has_runs()
        except OSError:
            return False

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="Spectra")

    def get_plugin_apps(self) -> dict[str, Callable]:
        apps: dict[str, Callable] = {f"/{name}": _static_app(name) for name in _static_files()}
        endpoints = {
            "/runs": ((), (), self._runs),
            "/run": (("run",), (), self._run),
            "/overview": (("run",), ("metric",), self._overview),
            "/esd": (("run", "layer"), ("step", "epoch"), self._esd),
            "/compare": (("metric", "param"), ("epoch", "layer"), self._compare),
        }
        for route, (required, optional, handler) in endpoints.items():
            apps[route] = self._json_app(required, optional, handler)
        return apps

    def _runs(self, arguments: dict[str, str]) -> bytes:
        return _json_bytes(self._listing())

    def _listing(self) -> dict[str, Any]:
        """The run listing, each run's line kept while its file is unchanged."""
        return queries.run_listing(
            self._catalog_or_fail(),
            lambda entry: json.loads(self._answer(entry, ("summary",), queries.run_summary)),
        )

    def _run(self, arguments: dict[str, str]) -> bytes:
        return self._answer(self._entry(arguments["run"]), ("run",), queries.run_details)

    def _overview(self, arguments: dict[str, str]) -> bytes:
        metric = requests.metric(arguments.get("metric"))
        return self._answer(
            self._entry(arguments["run"]),
            ("overview", metric),
            lambda entry, reader: queries.metric_overview(entry, reader, metric),
        )

    def _esd(self, arguments: dict[str, str]) -> bytes:
        step = requests.integer("step", arguments.get("step"))
        epoch = requests.integer("epoch", arguments.get("epoch"))
        if step is not None and epoch is not None:
            raise InvalidRequestError("Give either 'step' or 'epoch', not both.")
        entry = self._entry(arguments["run"])

        def esd(entry: RunEntry, reader: RunReader) -> dict[str, Any]:
            layer = requests.one_of(
                "layer", arguments["layer"], reader.layers, f"layer in run {entry.name!r}"
            )
            try:
                return queries.layer_esd(entry, reader, layer, step=step, epoch=epoch)
            except KeyError as error:
                raise InvalidRequestError(str(error.args[0])) from None

        return self._answer(entry, ("esd", arguments["layer"], step, epoch), esd)

    def _compare(self, arguments: dict[str, str]) -> bytes:
        metric = requests.metric(arguments["metric"])
        catalog = self._catalog_or_fail()
        parameter = arguments["param"]
        known = self._listing()["params"]
        requests.one_of("param", parameter, known, "run parameter")
        epoch = requests.integer("epoch", arguments.get("epoch"))
        layer = arguments.get("layer")
        return _json_bytes(queries.compare_points(catalog, metric, parameter, epoch=epoch, layer=layer))

    def _catalog_or_fail(self) -> Catalog:
        if self._catalog is None:
            raise InvalidRequestError(
                "TensorBoard was started without --logdir; the Spectra tab reads run files under it."
            )
        return self._catalog

    def _entry(self, name: str) -> RunEntry:
        catalog = self._catalog_or_fail()
        try:
            return catalog.entry(name)
        except UnknownRunError:
            reason = catalog.unreadable().get(name)
            if reason is not None:  # found before, broken since (or never readable)
                raise _UnreadableRunError(f"Run {name!r} cannot be read now: {reason}") from None
            requests.one_of("run", name, [entry.name for entry in catalog.runs()], "run")
            raise  # not reached: one_of refused the name

    def _answer(
        self, entry: RunEntry, question: tuple, compute: Callable[[RunEntry, RunReader], Any]
    ) -> bytes:
        """The JSON answer of ``compute`` on the run's file, from the cache while the file is unchanged.

        Raises:
            _UnreadableRunError: the file cannot be opened now.
        """
        try:
            signature = file_signature(entry.path)
        except OSError as error:
            raise _UnreadableRunError(f"Run {entry.name!r} cannot be read now: {error}") from None

        def read() -> bytes:
            try:
                reader = open_run(entry.path)
            except (OSError, ValueError) as error:
                raise _UnreadableRunError(f"Run {entry.name!r} cannot be read now: {error}") from None
            with reader:
                return _json_bytes(compute(entry, reader))

        return self._answers.get_or_compute((entry.path, signature, *question), read)

    def _json_app(self, required: tuple[str, ...], optional: tuple[str, ...], handler: Handler) -> Callable:
        @wrappers.Request.application
        def app(request: wrappers.Request) -> wrappers.Response:
            try:
                arguments = requests.checked_arguments(request.args.to_dict(flat=False), required, optional)
                body, code = handler(arguments), 200
            except InvalidRequestError as error:
                body, code = _json_bytes({"error": str(error)}), 400
            except _UnreadableRunError as error:
                body, code = _json_bytes({"error": str(error)}), 422
            except Exception as error:  # noqa: BLE001 - a damaged or forged file may raise anything
                _logger.warning("Spectra request %s failed: %r", request.path, error)
                body, code = _json_bytes({"error": f"The run file could not be read: {error}"}), 422
            return http_util.Respond(request, body, "application/json", code=code)

        return app


class _UnreadableRunError(Exception):
    """A run the catalog found whose file cannot be opened now."""


def _json_bytes(answer: Any) -> bytes:
    return json.dumps(answer, allow_nan=False, separators=(",", ":")).encode("utf-8")


def _static_files() -> list[str]:
    """The files of the page: every file in ``static/`` (a fixed set, read once)."""
    folder = resources.files(__package__) / "static"
    return sorted(item.name for item in folder.iterdir() if item.is_file() and not item.name.startswith("."))


def _static_app(name: str) -> Callable:
    suffix = name[name.rfind(".") :] if "." in name else ""
    content_type = _CONTENT_TYPES.get(suffix, "application/octet-stream")

    @wrappers.Request.application
    def app(request: wrappers.Request) -> wrappers.Response:
        content = (resources.files(__package__) / "static" / name).read_bytes()
        return http_util.Respond(request, content, content_type)

    return app

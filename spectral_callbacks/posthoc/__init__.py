"""Post-hoc analysis of saved weights: checkpoints in many formats, fanned out over processes or dask.

``analyze_paths`` opens each path lazily (one tensor loaded per task, in the process that
analyzes it), runs the tasks on the chosen executor and returns one :class:`FileResult` per
path, in the order given, with identical numbers whatever the executor.
"""

from ..analysis.executors import ExecutorError, parse_executor
from .analysis import AnalysisOptions, FileResult, analyze_paths
from .sources import ParameterRef, Source, SourceError, open_source

__all__ = [
    "AnalysisOptions",
    "ExecutorError",
    "FileResult",
    "ParameterRef",
    "Source",
    "SourceError",
    "analyze_paths",
    "open_source",
    "parse_executor",
]

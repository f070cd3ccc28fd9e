"""Every error cdm-bench raises on purpose: one base class, caught once by the command line.

A :class:`CdmBenchError` is a user-facing problem (a bad spec, a missing package, a run
directory that belongs to another run, ...). Its message is one line that names the bad value
and what to do; the CLI prints it without a traceback and exits with code 2. Anything else
that escapes is a bug and keeps its traceback.

The classes also derive from the builtin exception a caller would naturally catch
(``ValueError`` for specs, ``KeyError`` for unknown names, ``ImportError`` for missing
dependencies, ``RuntimeError`` for run-state problems), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class CdmBenchError(Exception):
    """Base class: a clear, user-facing error (exit code 2 on the command line)."""

    exit_code = 2


class SpecError(CdmBenchError, ValueError):
    """A malformed generator / benchmark / prompt-set spec or command-line value."""


class RecipeError(SpecError):
    """A malformed distillation recipe or ``--set`` override."""


class UnknownNameError(CdmBenchError, KeyError):
    """An unknown registry name; the message carries "did you mean" suggestions."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class MissingDependencyError(CdmBenchError, ImportError):
    """A metric's (or generator's) optional packages or weights are missing.

    The message names the pip extra / eval environment to install and the weights to fetch.
    """


class RunConflictError(CdmBenchError, RuntimeError):
    """An output directory belongs to a different run (or is being written by another process)."""


class EvaluationInputError(CdmBenchError, RuntimeError):
    """Missing or corrupt images, or an unfinished generation directory."""


class MetricFailedError(CdmBenchError, RuntimeError):
    """One or more metrics failed while scoring (details in results.json)."""


class RunNotFoundError(CdmBenchError, FileNotFoundError):
    """A run directory (or a file a command needs) does not exist."""


class MissingWeightsError(CdmBenchError, FileNotFoundError):
    """Model weights (a hub id or a local folder) are not available here; the message names the
    repo id and how to provide a local copy."""

"""Errors meant for users: one clear sentence each, caught once in the CLI, which exits with the class's
`exit_status`: 3 for a problem with an input, an output or a checkpoint, 2 for an option (as Click's usage errors),
4 for a batch in which some scenes failed."""


class MdsegError(Exception):
    """A problem the user can fix: bad input, a missing file, an unsupported option."""

    # The command line's exit status for this kind of error (scripts tell the kinds apart by it).
    exit_status: int = 3


class BackendUnavailableError(MdsegError):
    """A scan backend was asked for by name but cannot run here."""


class InputFileError(MdsegError):
    """An input raster is missing, unreadable, or not a raster GDAL can open."""


class BandSelectionError(MdsegError):
    """The bands asked for do not exist in a raster, or their count is not what the model expects."""


class GeoreferenceError(MdsegError):
    """Inputs lack a CRS, do not overlap, or sit on different grids where the same grid is required."""


class OutputError(MdsegError):
    """An output cannot be written where it was asked for."""


class OutputExistsError(OutputError):
    """An output file already exists and overwriting was not asked for."""


class CheckpointError(MdsegError):
    """A checkpoint is missing, not a safetensors file, lacks valid mdseg metadata, or does not fit its config."""


class OptionError(MdsegError, ValueError):
    """An option value is out of range or contradicts another (also a ValueError for library callers)."""

    exit_status = 2  # a usage error, like the option values Click itself rejects


class BatchError(MdsegError):
    """Some scenes of a batch run failed; the others were written."""

    exit_status = 4


class ClassValueError(MdsegError, ValueError):
    """A label or prediction holds values that are neither class indices nor ignored / nodata.

    `role` says which ("label" or "prediction") so callers can name the file.
    """

    def __init__(self, message: str, role: str) -> None:
        super().__init__(message)
        self.role = role


class DatasetError(MdsegError):
    """A training / evaluation dataset cannot be used as given: unreadable classes.json, an unknown split,
    rasters of one sample that do not match in size."""


class DatasetLayoutError(DatasetError):
    """A dataset folder fits none of the known layouts, lacks a folder, or its folders hold different files."""


class Interrupted(BaseException):
    """The run was asked to stop by a signal (SIGINT, SIGTERM, SIGHUP): raised in the main thread, so every
    `with` block unwinds and removes its temporaries. A BaseException, like KeyboardInterrupt, so that code
    catching `Exception` (a batch that logs a failing scene and goes on) does not swallow it. The CLI exits
    with 128 + `signum`."""

    def __init__(self, signum: int) -> None:
        import signal

        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum

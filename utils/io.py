"""Atomic file writes: a crash or a full disk never leaves a truncated file behind."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from utils.errors import UserError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGURE_DPI = 120


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_file_mode()


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    ``os.replace`` is atomic on POSIX, so readers see either the old file or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A leading dot and a .tmp suffix keep readers that scan the folder (utils.report) off it.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp creates 0600; results are meant to be shared
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def staging(path: Path) -> Iterator[Path]:
    """A fresh, empty folder at ``path`` to write a whole set of outputs into before
    ``replace_folder`` publishes it; removed again when the block raises (or is interrupted)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


class FolderLinkError(UserError, OSError):
    """A folder to replace whole is a symbolic link."""


def replace_folder(staged: Path, final: Path) -> None:
    """Move the folder ``staged`` to ``final``, replacing the folder there by two renames, so
    that readers never see a mix of old and new files. A crash between the renames leaves the
    old folder as ``.NAME.old`` beside it, which the next call removes."""
    if final.is_symlink():  # renaming the link would put the data beside it, not behind it
        raise FolderLinkError(
            f"{final} is a symbolic link; name the folder it points to ({final.resolve()})"
        )
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staged.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_npy(path: str | Path, array: np.ndarray) -> Path:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array))
    return atomic_write_bytes(path, buffer.getvalue())


def save_figure(fig: Figure, path: str | Path, dpi: int = FIGURE_DPI) -> Path:
    """Save ``fig`` as a PNG at ``path`` atomically, close it and return the path."""
    import matplotlib.pyplot as plt  # the caller drew with it, so it is loaded already

    try:
        # The temporary name ends in .tmp, so the format cannot be inferred from it.
        return atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=dpi))
    finally:
        plt.close(fig)


class ResultsDirError(UserError, OSError):
    """``results_dir`` cannot be created, or this user cannot write in it."""


def make_results_dir(results_dir: Path) -> None:
    """Create ``results_dir`` if absent and check that this user can write in it."""
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        probe = results_dir / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise ResultsDirError(
            f"results_dir={results_dir} cannot be created or written ({err.strerror}); "
            "choose a writable folder"
        ) from None

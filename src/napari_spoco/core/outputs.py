"""Write outputs safely: atomically, replacing only earlier outputs, cleaning up after kills.

Three rules hold for every output napari-spoco writes (results, tables,
packages, session files):

* It is written under a temporary name beside the target, ``.NAME.XXXXXXXX.tmp``
  (as :func:`tempfile.mkdtemp` names it), and renamed when complete, so an
  interrupted run never leaves a file that looks finished.
* It replaces only an earlier output of the same kind: a file a file, and a
  zarr folder only a zarr folder napari-spoco wrote (its attributes carry
  :data:`MARKER_KEY`). Anything else, such as a user's folder given by mistake,
  is refused with a ``ValueError`` naming it, so no user data is lost.
* Temporary outputs of the same target left by killed runs are removed when a
  new save to that target starts, once nothing in them changed for
  :data:`STALE_SECONDS`.

Only the standard library is imported (zarr lazily), so any core module can
write through here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "MARKER_KEY",
    "STALE_SECONDS",
    "atomic_output",
    "check_replaceable",
    "is_zarr_folder",
    "remove_stale_temporaries",
]

#: Zarr attribute that marks an array or group as written by napari-spoco.
MARKER_KEY = "napari_spoco"

#: Temporary outputs untouched for this long (seconds) were left by killed runs.
STALE_SECONDS = 15 * 60

logger = logging.getLogger(__name__)


def is_zarr_folder(path: Path) -> bool:
    """Whether ``path`` is a zarr folder (by its ``.zarr`` name or zarr metadata files)."""
    return path.is_dir() and (
        path.suffix.lower() == ".zarr"
        or any((path / name).exists() for name in ("zarr.json", ".zarray", ".zgroup"))
    )


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    Works for files and folders (zarr). An existing ``path`` is replaced only
    at the end, and only if :func:`check_replaceable` allows it (checked
    before and after the block); on any error (or Ctrl-C) the temporary
    output is removed and ``path`` is left as it was. Temporary outputs of
    ``path`` left by killed runs are removed first. The output gets the
    permissions of a newly created file (mode 0644 under the usual umask).

    Raises
    ------
    ValueError
        If ``path`` exists and is not an earlier output of the same kind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_replaceable(path)
    remove_stale_temporaries(path)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = temporary / path.name
    try:
        yield target
        folder = target.is_dir()
        check_replaceable(path, folder=folder)
        _set_default_mode(target)
        if folder and os.path.lexists(path):
            # Keep the old result until the new one is in place (rename, not delete).
            retired = temporary / "replaced"
            os.replace(path, retired)
            try:
                os.replace(target, path)
            except BaseException:
                os.replace(retired, path)
                raise
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def check_replaceable(path: str | os.PathLike, *, folder: bool | None = None) -> None:
    """Refuse to replace anything but an earlier output of the same kind.

    A file may be replaced by a file; a folder only if it is a zarr written
    by napari-spoco (it carries :data:`MARKER_KEY`), and only by a
    folder. With ``folder=None`` (kind not known yet) only folders
    napari-spoco did not write are refused. Nothing happens if ``path`` does
    not exist.

    Raises
    ------
    ValueError
        Naming ``path`` and why it is kept.
    """
    path = Path(path)
    if not os.path.lexists(path):
        return
    if path.is_dir():
        if not _is_our_zarr(path):
            raise ValueError(
                f"{path} is a folder that napari-spoco did not write; it is kept: "
                "choose another output name"
            )
        if folder is False:
            raise ValueError(
                f"{path} is a zarr folder; it is not replaced by a file: choose another output name"
            )
    elif folder:
        raise ValueError(
            f"{path} is a file; it is not replaced by a zarr folder: choose another output name"
        )


def _is_our_zarr(path: Path) -> bool:
    if not is_zarr_folder(path):
        return False
    import zarr

    try:
        return MARKER_KEY in zarr.open(path, mode="r").attrs
    except Exception:  # not readable as zarr: not ours
        return False


def remove_stale_temporaries(path: str | os.PathLike, *, older_than: float = STALE_SECONDS) -> None:
    """Remove temporary outputs of ``path`` left by killed saves.

    Only names that :func:`tempfile.mkstemp` / :func:`tempfile.mkdtemp` give
    with ``prefix=".NAME."`` and ``suffix=".tmp"`` beside ``path`` count, and
    only when nothing in them changed for ``older_than`` seconds, so a save
    still running elsewhere is left alone.
    """
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}\.tmp")
    try:
        candidates = [p for p in path.parent.iterdir() if pattern.fullmatch(p.name)]
    except OSError:
        return
    cutoff = time.time() - older_than
    for candidate in candidates:
        try:
            if _changed_since(candidate, cutoff):
                continue
            if candidate.is_dir() and not candidate.is_symlink():
                shutil.rmtree(candidate)
            else:
                candidate.unlink()
        except OSError:  # removed meanwhile, or not ours to remove
            continue
        logger.info("removed %s, left by an interrupted save", candidate)


def _changed_since(path: Path, cutoff: float) -> bool:
    """Whether ``path`` or, for a folder, anything in it was modified after ``cutoff``."""
    if path.lstat().st_mtime > cutoff:
        return True
    if path.is_dir() and not path.is_symlink():
        for root, folders, files in os.walk(path):
            for name in (*folders, *files):
                with contextlib.suppress(OSError):
                    if os.lstat(os.path.join(root, name)).st_mtime > cutoff:
                        return True
    return False


def _set_default_mode(path: Path) -> None:
    """Give ``path`` the mode a new file or folder gets here (mkstemp, e.g., makes 0600).

    The mode is read from a probe created beside ``path``, which honours the
    umask without changing it (``os.umask`` would, for every thread).
    """
    if path.is_symlink():
        return
    probe = path.parent / ".mode-probe"
    folder = path.is_dir()
    if folder:
        probe.mkdir()
    else:
        probe.touch()
    try:
        os.chmod(path, stat.S_IMODE(probe.stat().st_mode))
    finally:
        if folder:
            probe.rmdir()
        else:
            probe.unlink()

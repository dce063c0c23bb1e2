"""Where Numba caches fastgd's compiled kernels when it cannot use its own places.

Numba caches beside the source file, else in the user's cache folder
(``NUMBA_CACHE_DIR`` overrides both). Where neither can be written (a
read-only install and home), :class:`PrivateCacheLocator` keeps fastgd's
kernels in a folder of the temporary directory that belongs to this user
alone (created 0700, and used only while it is a real folder owned by this
user and closed to others), else in a fresh private folder for this process
only. Cached files are pickles that Numba loads, so a folder another user
could write into is never used. It applies to fastgd's kernel file only and
leaves Numba's settings for everything else alone.
"""

import os
import stat
import tempfile

from numba.core.caching import CacheImpl, InTreeCacheLocator

_files = set()


def _private_folder(path):
    """``path`` once it is (or has been made) a real folder owned by this user, closed to others; else None."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return path


class PrivateCacheLocator(InTreeCacheLocator):
    """Numba's last resort for fastgd's kernel file: a private folder (see the module docstring)."""

    _process_folder = None

    def __init__(self, py_func, py_file):
        super().__init__(py_func, py_file)
        shared = os.path.join(tempfile.gettempdir(), f"fastgd-numba-cache-{os.getuid()}")
        folder = _private_folder(shared)
        if folder is None:
            if PrivateCacheLocator._process_folder is None:
                PrivateCacheLocator._process_folder = tempfile.mkdtemp(prefix="fastgd-numba-cache-")
            folder = PrivateCacheLocator._process_folder
        self._cache_path = os.path.join(folder, self.get_suitable_cache_subpath(py_file))

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.abspath(py_file) not in _files:
            return None
        return super().from_function(py_func, py_file)


def use_private_fallback(py_file):
    """Let the kernels of ``py_file`` fall back on :class:`PrivateCacheLocator`."""
    _files.add(os.path.abspath(py_file))
    if PrivateCacheLocator not in CacheImpl._locator_classes:
        CacheImpl._locator_classes.append(PrivateCacheLocator)

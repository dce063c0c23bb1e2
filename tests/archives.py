"""Model files built member by member, as a hostile or careless writer could: any member names
(duplicates and aliases too), stored or deflated, with any .npy preamble and any amount of data."""

import io
import json
import zipfile

import numpy as np

ZERO_CHUNK = bytes(1 << 22)


def preamble(shape, dtype):
    """The .npy preamble (magic and header) declaring ``shape`` and ``dtype``."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                  "fortran_order": False, "shape": tuple(shape)})
    return buffer.getvalue()


def npy(array):
    """``array`` as the bytes of a .npy file."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=True)
    return buffer.getvalue()


def header_npy(header):
    return npy(np.frombuffer(json.dumps(header).encode(), np.uint8))


def zeros(shape, dtype):
    """A lazy member: the preamble of ``shape``/``dtype`` then that many zero bytes."""
    return preamble(shape, dtype), int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize


def write(path, members, compression=zipfile.ZIP_STORED):
    """A zip archive of ``members``: ``(name, bytes)`` or ``(name, (preamble, n_zero_bytes))`` pairs."""
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members:
            if isinstance(data, bytes):
                archive.writestr(name, data)
                continue
            head, n_zeros = data
            with archive.open(name, "w", force_zip64=True) as member:
                member.write(head)
                while n_zeros:
                    chunk = ZERO_CHUNK[: min(n_zeros, len(ZERO_CHUNK))]
                    member.write(chunk)
                    n_zeros -= len(chunk)


def read(path):
    """``(header dict, {member name: .npy bytes})`` of a saved model."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    raw = np.lib.format.read_array(io.BytesIO(members.pop("header.npy")))
    return json.loads(raw.tobytes()), members

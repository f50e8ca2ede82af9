"""Decode glTF accessors into numpy arrays: every component type, strides, sparse, normalized.

Real provider files use all of it: quantized positions (``KHR_mesh_quantization``), int8 normals,
Blender's sparse morph targets, interleaved views. Every read is bounds-checked first, so a
broken file becomes a :class:`BrokenAsset` that names the accessor instead of an ``IndexError``
or a silently zero-filled mesh (what trimesh does, see tests/data/gltf/README.md).
"""

from __future__ import annotations

import numpy as np

from avatar_studio.avatar.errors import BrokenAsset
from avatar_studio.avatar.gltf_document import GltfDocument

COMPONENT_DTYPES: dict[int, np.dtype] = {
    5120: np.dtype("<i1"),
    5121: np.dtype("<u1"),
    5122: np.dtype("<i2"),
    5123: np.dtype("<u2"),
    5125: np.dtype("<u4"),
    5126: np.dtype("<f4"),
}
TYPE_SIZES = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
INDEX_TYPES = {5121, 5123, 5125}
# Beyond this an accessor with no bufferView (zeros + sparse) is an attack, not an avatar.
MAX_ELEMENTS = 1 << 25
# Float data beyond ±1e7 (10 km in metres) is corrupt for an avatar, and squaring it in normal
# computations would overflow float32; refusing it here keeps every later stage finite.
MAX_MAGNITUDE = 1e7


def _element_layout(kind: str, dtype: np.dtype) -> tuple[int, int, int]:
    """(rows, cols, padded column bytes): matrices of 1- and 2-byte types pad columns to 4 bytes."""
    if kind.startswith("MAT"):
        n = int(kind[3])
        col_bytes = n * dtype.itemsize
        return n, n, col_bytes + (-col_bytes % 4)
    n = TYPE_SIZES[kind]
    return 1, n, n * dtype.itemsize


def _strided(
    data: bytes | memoryview, offset: int, count: int, stride: int, kind: str, dtype: np.dtype, where: str, limit: int,
    *, copy: bool = True,
) -> np.ndarray:
    """``count`` elements starting at ``offset`` with ``stride`` as a (count, ncomp) array.

    ``copy=False`` returns a read-only view into the file's bytes, for callers that copy it
    themselves (a morph target going straight into its slot of the delta array).
    """
    rows, cols, col_bytes = _element_layout(kind, dtype)
    element_bytes = rows * col_bytes if rows > 1 else cols * dtype.itemsize
    if count == 0:
        return np.zeros((0, rows * cols), dtype)
    end = offset + (count - 1) * stride + element_bytes
    if offset < 0 or end > limit:
        raise BrokenAsset(f"{where} reads bytes {offset}..{end}, past the end of its buffer view ({limit})")
    # numpy copes with unaligned offsets/strides (invalid glTF, but cheap to survive).
    if rows > 1:
        view = np.ndarray(
            (count, rows, cols), dtype, buffer=data, offset=offset, strides=(stride, col_bytes, dtype.itemsize)
        )
        return view.reshape(count, rows * cols).copy()  # column-major, as stored
    view = np.ndarray((count, cols), dtype, buffer=data, offset=offset, strides=(stride, dtype.itemsize))
    return view.copy() if copy else view


def _normalize(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """glTF's normalized-integer rule: unsigned c/max, signed max(c/max, -1)."""
    info = np.iinfo(dtype)
    out = values.astype(np.float32) / np.float32(info.max)
    if info.min < 0:
        np.maximum(out, -1.0, out=out)
    return out


def read_accessor(
    doc: GltfDocument, index: object, referrer: str, *, as_float: bool = True, out: np.ndarray | None = None
) -> np.ndarray:
    """Accessor ``index`` as a (count, components) array.

    ``as_float`` converts to float32 (applying ``normalized``) for attributes; index buffers and
    joint indices ask for the raw integers instead. ``out`` (zero-filled float32 of the expected
    shape) receives the result in place: a sparse morph target then costs only its few substituted
    rows instead of a full-size temporary and a copy. Float data must be finite.
    """
    acc = doc.get("accessors", index, referrer)
    where = f"accessors[{index}]"
    ctype = acc.get("componentType")
    kind = acc.get("type")
    count = acc.get("count")
    if not isinstance(ctype, int) or ctype not in COMPONENT_DTYPES:
        raise BrokenAsset(f"{where} has an unknown componentType {ctype!r}")
    if not isinstance(kind, str) or kind not in TYPE_SIZES:
        raise BrokenAsset(f"{where} has an unknown type {kind!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise BrokenAsset(f"{where} needs a non-negative integer 'count'")
    dtype = COMPONENT_DTYPES[ctype]
    ncomp = TYPE_SIZES[kind]
    normalized = acc.get("normalized", False) is True
    if normalized and ctype in (5125, 5126):
        raise BrokenAsset(f"{where}: 'normalized' is only allowed for 8- and 16-bit integers")
    if count * ncomp > MAX_ELEMENTS:
        raise BrokenAsset(f"{where} declares {count} elements, far more than any avatar needs")
    if out is not None and out.shape != (count, ncomp):
        raise BrokenAsset(f"{where} holds {count} {kind} values where {out.shape[0]} were expected ({referrer})")

    in_place = out is not None and "bufferView" not in acc and dtype == np.float32
    if "bufferView" in acc:
        data, start, length, stride = doc.buffer_view(acc["bufferView"], where)
        byte_offset = acc.get("byteOffset", 0)
        if not isinstance(byte_offset, int) or byte_offset < 0:
            raise BrokenAsset(f"{where}: 'byteOffset' must be a non-negative integer")
        rows, cols, col_bytes = _element_layout(kind, dtype)
        element_bytes = rows * col_bytes if rows > 1 else cols * dtype.itemsize
        # A float target read into ``out`` needs no intermediate copy: view, check, copy once.
        direct = out is not None and dtype == np.float32 and "sparse" not in acc
        values = _strided(
            data, start + byte_offset, count, stride or element_bytes, kind, dtype, where, start + length,
            copy=not direct,
        )
        require_finite(values, where)
    else:
        values = out if in_place else np.zeros((count, ncomp), dtype)  # type: ignore[assignment]

    if "sparse" in acc:
        _apply_sparse(doc, acc["sparse"], values, dtype, kind, where)

    if as_float:
        values = _normalize(values, dtype) if normalized else values.astype(np.float32, copy=False)
    if out is not None and not in_place:
        out[...] = values
        return out
    return values


def require_finite(values: np.ndarray, where: str) -> None:
    """Finite and within ±MAX_MAGNITUDE; two reductions, no temporary (NaN fails both comparisons)."""
    if values.dtype.kind != "f" or not values.size:
        return
    low, high = values.min(), values.max()
    if not (low >= -MAX_MAGNITUDE and high <= MAX_MAGNITUDE):
        if np.isfinite(low) and np.isfinite(high):
            raise BrokenAsset(f"{where} holds values up to {max(-low, high):.3g}, far beyond any avatar's size")
        raise BrokenAsset(f"{where} contains NaN or infinite values")


def _apply_sparse(
    doc: GltfDocument, sparse: object, values: np.ndarray, dtype: np.dtype, kind: str, where: str
) -> None:
    """Substitute the sparse elements in place (glTF 2.0 §3.6.2.3)."""
    if not isinstance(sparse, dict):
        raise BrokenAsset(f"{where}.sparse must be a JSON object")
    n = sparse.get("count")
    idx_spec = sparse.get("indices")
    val_spec = sparse.get("values")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or n > len(values):
        raise BrokenAsset(f"{where}.sparse.count must be between 1 and the accessor's count ({len(values)})")
    if not isinstance(idx_spec, dict) or not isinstance(val_spec, dict):
        raise BrokenAsset(f"{where}.sparse needs 'indices' and 'values' objects")
    itype = idx_spec.get("componentType")
    if not isinstance(itype, int) or itype not in INDEX_TYPES:
        raise BrokenAsset(f"{where}.sparse.indices has componentType {itype!r}; expected an unsigned integer")
    for spec, name in ((idx_spec, "indices"), (val_spec, "values")):
        off = spec.get("byteOffset", 0)
        if not isinstance(off, int) or off < 0:
            raise BrokenAsset(f"{where}.sparse.{name}.byteOffset must be a non-negative integer")
    data, start, length, _ = doc.buffer_view(idx_spec.get("bufferView"), f"{where}.sparse.indices")
    itemsize = COMPONENT_DTYPES[itype].itemsize
    indices = _strided(
        data, start + idx_spec.get("byteOffset", 0), n, itemsize, "SCALAR", COMPONENT_DTYPES[itype],
        f"{where}.sparse.indices", start + length,
    )[:, 0]
    if indices.size and int(indices.max()) >= len(values):
        raise BrokenAsset(
            f"{where}.sparse.indices refers to element {int(indices.max())}, but the accessor has {len(values)}"
        )
    data, start, length, _ = doc.buffer_view(val_spec.get("bufferView"), f"{where}.sparse.values")
    rows, cols, col_bytes = _element_layout(kind, dtype)
    element_bytes = rows * col_bytes if rows > 1 else cols * dtype.itemsize
    substitutes = _strided(
        data, start + val_spec.get("byteOffset", 0), n, element_bytes, kind, dtype,
        f"{where}.sparse.values", start + length,
    )
    require_finite(substitutes, f"{where}.sparse.values")
    values[indices.astype(np.intp)] = substitutes

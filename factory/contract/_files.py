"""The files of a model package, read from the store or a folder, refused if unsafe.

A package is its weights (``model.safetensors``, or Hugging Face shards with their
index: see ``_weights``), contract, architecture reference, model card and metrics,
plus, in a folder, an optional ``manifest.json``. Its digest is the SHA-256 of the
manifest: canonical JSON mapping each file name to its digest, so any changed byte
in any file changes it. File names are checked before any file is read, and every
file's first bytes before it is parsed: pickles, torch zip checkpoints and their
usual suffixes are refused outright, never opened. The small files are read whole;
the weights are only described here (``Weights``) and streamed when loaded.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from factory._untrusted import load_json, preview
from factory.contract._schema import canonical_json
from factory.contract._weights import (
    INDEX,
    MAX_INDEX_BYTES,
    WEIGHTS,
    Weights,
    WeightsFile,
    is_weights_name,
    weights_layout,
)
from factory.errors import ContractViolationError, InvalidInputError, UnsafePackageError

if TYPE_CHECKING:
    from factory.store import Store

__all__ = [
    "FORMAT",
    "WEIGHTS",
    "INDEX",
    "CONTRACT",
    "ARCHITECTURE",
    "CARD",
    "METRICS",
    "MANIFEST",
    "PACKAGE_FILES",
    "CORE_FILES",
    "UNSAFE_SUFFIXES",
    "PackageFiles",
    "manifest_bytes",
    "open_files",
    "read_from_store",
    "read_from_dir",
    "write_dir",
]

FORMAT = "factory.model-package/v1"
CONTRACT = "contract.json"
ARCHITECTURE = "architecture.json"
CARD = "README.md"
METRICS = "metrics.json"
MANIFEST = "manifest.json"
CORE_FILES = (ARCHITECTURE, CARD, CONTRACT, METRICS)
PACKAGE_FILES = (*CORE_FILES, WEIGHTS)  # the single-file layout
SNIFF_BYTES = 4096
UNSAFE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt", ".joblib", ".dill", ".npy", ".npz", ".h5")

_PROTOCOL0_PICKLE = re.compile(rb"^c[A-Za-z_][\w.]*\n[\w.]+\n")
# Every file but the weights is a short text: a larger one is refused before it is read.
MAX_TEXT_BYTES = 1 << 20


@dataclass(frozen=True)
class PackageFiles:
    """A package: its digest, its small files' verified bytes by name, and its weights to stream.

    ``files`` holds every file but the weights (the shard index included);
    ``manifest`` maps every file name, weights included, to its digest.
    """

    digest: str
    files: Mapping[str, bytes]
    manifest: Mapping[str, str]
    source: str
    weights: Weights


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_bytes(digests: Mapping[str, str]) -> bytes:
    """The manifest whose SHA-256 is the package digest."""
    return canonical_json({"format": FORMAT, "files": dict(sorted(digests.items()))})


def _check_names(names: Iterable[str], where: str) -> list[str]:
    """Refuse unsafe, unknown or missing files by name alone, before anything is read.

    Returns the names of the small files to read whole (core files and shard index).
    """
    names = list(names)
    for name in names:
        lowered = name.lower()
        if lowered.endswith(UNSAFE_SUFFIXES):
            raise UnsafePackageError(
                f"{where} holds {name!r}, a file type that can run code when loaded (pickle, torch.save): "
                "refused without reading it. Re-export the weights as safetensors and drop the file"
            )
    weights = [n for n in names if is_weights_name(n)]
    unknown = sorted(set(names) - set(CORE_FILES) - set(weights) - {MANIFEST})
    if unknown:
        raise ContractViolationError(
            f"{where} holds unexpected files {preview(unknown, 300)}: a package holds only {list(PACKAGE_FILES)}, "
            f"or {list(CORE_FILES)} with {INDEX} and model-00001-of-0000N.safetensors shards"
        )
    missing = sorted(set(CORE_FILES) - set(names))
    if missing:
        raise ContractViolationError(f"{where} lacks {missing}: write the package with factory.contract.package")
    weights_layout(weights, where)
    return [*CORE_FILES, *([INDEX] if INDEX in names else [])]


def _sniff(name: str, data: bytes, where: str) -> None:
    """Refuse content that is a pickle or a zip (torch's checkpoint format), whatever the file is called."""
    found = None
    if name == WEIGHTS and data[8:9] == b"{":
        return  # a safetensors header follows the 8-byte length; the header check covers the rest
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        found = f"a pickle (protocol {data[1]})"
    elif data.startswith(b"PK\x03\x04"):
        found = "a zip archive (the torch.save checkpoint format)"
    elif _PROTOCOL0_PICKLE.match(data):
        found = "a pickle (protocol 0)"
    if found:
        raise UnsafePackageError(
            f"{name} in {where} is {found}: refused without loading it. "
            "A package holds weights only as safetensors; re-export them with safetensors.torch.save_file"
        )


def _size_limit(name: str) -> int:
    """The most bytes a file read whole may hold (the weights are streamed, never read whole)."""
    return MAX_INDEX_BYTES if name == INDEX else MAX_TEXT_BYTES


def _too_big(name: str, size: int, where: str) -> ContractViolationError:
    return ContractViolationError(
        f"{name} in {where} is {size:,} bytes, more than the {_size_limit(name):,} a package's {name} may hold: "
        "re-package the model"
    )


def _check_size(name: str, size: int, where: str) -> None:
    if size > _size_limit(name):
        raise _too_big(name, size, where)


def _parse_manifest(data: bytes, where: str) -> dict[str, str]:
    try:
        manifest = load_json(data, what=MANIFEST, max_bytes=MAX_TEXT_BYTES, error=ValueError)
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError(f"format {manifest.get('format')!r}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise ValueError("file entries must map names to digests")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ContractViolationError(
            f"the manifest of {where} is not a {FORMAT} manifest ({exc}): re-package the model"
        ) from None
    return files


def _sniff_weights(weights: Weights) -> None:
    for file in weights.files:
        _sniff(file.name, weights.prefix(file, SNIFF_BYTES), weights.where)


def read_from_store(store: Store, digest: str) -> PackageFiles:
    """The files of the ``model`` artifact ``digest``: the small ones read and verified, the weights described."""
    from factory.store import ArtifactKind

    digest = store.artifacts.resolve(digest)
    artifact = store.artifacts.get(digest)
    if artifact.kind != ArtifactKind.MODEL:
        raise InvalidInputError(f"{digest} is a {artifact.kind} artifact, not a model package: give a model digest")
    where = f"package {digest}"
    _check_size(MANIFEST, store.blobs.size(digest), where)
    manifest = _parse_manifest(store.blobs.get(digest), where)
    files = {}
    for name in _check_names(manifest, where):
        _check_size(name, store.blobs.size(manifest[name]), where)
        data = store.blobs.get(manifest[name])  # verified: a tampered blob raises CorruptBlobError
        _sniff(name, data, where)
        files[name] = data

    def stored(name: str) -> WeightsFile:
        blob = manifest[name]
        return WeightsFile(name, blob, store.blobs.size(blob), lambda: store.blobs.open(blob))

    weights = Weights(tuple(stored(n) for n in weights_layout(list(manifest), where)), files.get(INDEX), where)
    _sniff_weights(weights)
    return PackageFiles(digest, files, dict(manifest), where, weights)


def _local_weights_file(name: str, path: str, where: str) -> WeightsFile:
    """A weights file in a folder, hashed now (streaming) so that loading can check it did not change."""
    from factory.store import VerifyingReader

    with _open_regular(path, name, where) as f:
        digest = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
        size = os.fstat(f.fileno()).st_size
    return WeightsFile(name, digest, size, lambda: VerifyingReader(_open_regular(path, name, where), digest, path))


def _open_regular(path: str, name: str, where: str):
    """Open a package file for reading; anything but a regular file is refused by its type, never waited on.

    The type is checked on the open descriptor, so a FIFO swapped in after the folder
    was listed is caught too.
    """
    from factory.store import NotRegularFile, open_regular

    try:
        return open_regular(path)
    except NotRegularFile:
        raise _not_regular(name, where) from None
    except OSError as exc:
        raise ContractViolationError(f"{name} in {where} cannot be opened ({exc.strerror}): check the file") from None


def read_from_dir(path: str | os.PathLike[str]) -> PackageFiles:
    """The files of a package folder (as ``export`` writes it); its digest is computed from them."""
    root = Path(path)
    if not root.is_dir():
        raise InvalidInputError(f"{root} is not a folder: give a package folder or a model digest")
    real_root = root.resolve()
    where = f"package folder {root}"
    entries = {}
    for entry in os.scandir(root):
        if entry.is_symlink():
            target = Path(os.path.realpath(entry.path))
            if real_root not in target.parents:
                raise UnsafePackageError(
                    f"{entry.name} in {where} is a link to {target}, outside the package: copy the file in instead"
                )
        if entry.is_dir():
            raise ContractViolationError(f"{where} holds a folder {entry.name!r}: a package holds only files")
        if not entry.is_file():
            raise _not_regular(entry.name, where)
        entries[entry.name] = entry.path
    files = {}
    for name in _check_names([n for n in entries if n != MANIFEST], where):
        data = _read_regular(entries[name], name, where)
        _sniff(name, data, where)
        files[name] = data
    layout = weights_layout(list(entries), where)
    for name in layout:
        with _open_regular(entries[name], name, where) as f:
            _sniff(name, f.read(SNIFF_BYTES), where)
    weights = Weights(tuple(_local_weights_file(n, entries[n], where) for n in layout), files.get(INDEX), where)
    digests = {name: _sha256(data) for name, data in files.items()} | {f.name: f.digest for f in weights.files}
    if MANIFEST in entries:
        recorded = _parse_manifest(_read_regular(entries[MANIFEST], MANIFEST, where), where)
        changed = sorted(n for n in digests if recorded.get(n) != digests[n])
        if changed or set(recorded) != set(digests):
            raise ContractViolationError(
                f"{where}: {changed or 'the file list'} no longer match manifest.json: the files were changed "
                "after packaging; re-export the package, or delete manifest.json to validate the files as they are"
            )
    return PackageFiles(_sha256(manifest_bytes(digests)), files, digests, where, weights)


def _not_regular(name: str, where: str) -> ContractViolationError:
    return ContractViolationError(
        f"{name} in {where} is not a regular file (a FIFO, socket or device): a package holds only regular files"
    )


def _read_regular(path: str, name: str, where: str) -> bytes:
    """The bytes of a regular file, its type and size checked on the open descriptor before reading.

    Opening does not block (a FIFO put in place after the listing would wait for a writer
    forever), and whatever was opened is checked again, so a swap after the listing is caught too.
    """
    with _open_regular(path, name, where) as f:
        _check_size(name, os.fstat(f.fileno()).st_size, where)
        return f.read()


def open_files(source: str | os.PathLike[str], store: Store | None = None) -> PackageFiles:
    """A package folder (a path) or a model digest (or unique prefix) in ``store``."""
    if isinstance(source, os.PathLike) or os.path.exists(source):
        return read_from_dir(source)
    if store is None:
        raise InvalidInputError(f"{source!r} is not a folder, and no store was given to look it up as a digest")
    return read_from_store(store, source)


def write_dir(files: PackageFiles, dest: str | os.PathLike[str]) -> Path:
    """Write the package files and its manifest to ``dest`` (created; must be empty if it exists).

    The weights stream through, checked against their digests; the folder is built
    beside ``dest`` and renamed into place, so a corrupt blob leaves nothing behind.
    """
    from factory.store import check_output_path

    dest = check_output_path(dest, folder=True)
    if dest.exists() and any(dest.iterdir()):
        raise InvalidInputError(f"{dest} exists and is not empty: choose a new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.part"
    staging.mkdir()
    try:
        for name, data in files.files.items():
            (staging / name).write_bytes(data)
        for file in files.weights.files:
            with file.open() as src, open(staging / file.name, "wb") as out:
                shutil.copyfileobj(src, out, 4 << 20)  # the end of the stream checks the digest
        (staging / MANIFEST).write_bytes(manifest_bytes(files.manifest))
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest

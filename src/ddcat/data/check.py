"""Every file of a list checked before a command writes anything (issue 20, section 1).

A corrupt PNG, a truncated image, an RGB or 16-bit label, a label of another size than its image or
a decompression bomb used to be found when the sample was first loaded, after the run folder, its
config, log and first checkpoint had been written. :func:`check_pairs` finds them up front:

* every image and label **header** is opened with PIL (format, size, mode; no pixel decoded), so a
  file PIL cannot identify, a bomb (width x height above ``Image.MAX_IMAGE_PIXELS``, compared
  explicitly: no warning filter is changed inside the thread pool), a label that is not
  single-channel or an image / label size mismatch is found;
* a PNG or JPEG whose **end marker** is missing (``IEND`` / ``FFD9``: the file was cut short) is
  found by reading its last bytes;
* each label of at most :data:`DECODE_LABEL_PIXELS` pixels is **decoded** and its values checked with
  the loader's own rule (:func:`~ddcat.data.listfile.load_label`: ``< K`` or 255): a VOC label is
  decoded in about a millisecond, so this is cheap; larger labels get the header check only. The
  values allowed are the dataset's own statement (``raw_label_values()``: ADE20K's files hold 0..150).

Files are checked in a thread pool (PIL releases the GIL while it inflates), with a progress bar.
Results are cached by ``(path, size, mtime_ns)`` and the number of classes in the JSON file
:func:`cache_path` names (``<data root>/.ddcat-check-cache.json`` when the data root is writable,
else under ``~/.cache/ddcat``), so a second run over the same data only ``stat``s every file. A
failed file is never cached. A file that goes bad after the check is still caught when it is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from PIL import Image, UnidentifiedImageError

from ddcat.constants import IGNORE_INDEX
from ddcat.data.listfile import _LABEL_MODES, load_label
from ddcat.errors import DdcatError

#: Labels up to this many pixels are decoded to check their values (VOC: 0.19 MP, Cityscapes: 2.1 MP).
DECODE_LABEL_PIXELS = 1 << 22
CACHE_VERSION = 1
_TAIL = 64  # bytes read at the end of a file for its end marker
_PIL_ERRORS = (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError, SyntaxError, EOFError)


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def truncated(path: Path, fmt: str | None) -> bool:
    """Whether a PNG lacks its ``IEND`` chunk or a JPEG its ``FFD9`` marker at the end of the file
    (the signature of a copy or download cut short). Other formats: ``False`` (not checked)."""
    if fmt not in ("PNG", "JPEG", "MPO"):
        return False
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - _TAIL))
        tail = fh.read()
    if fmt == "PNG":
        return b"IEND" not in tail
    return b"\xff\xd9" not in tail


def _header(path: Path, kind: str) -> tuple[str | None, str, tuple[int, int]]:
    """(format, mode, (width, height)) of an image file without decoding it; DdcatError naming it.
    A decompression bomb is refused by comparing its pixel count with ``Image.MAX_IMAGE_PIXELS``
    (PIL itself raises above twice that); safe in the thread pool (no warning filter is touched)."""
    try:
        with Image.open(path) as img:
            info = (img.format, img.mode, img.size)
    except _PIL_ERRORS as exc:
        raise DdcatError(f"cannot read {kind} {path}: {_reason(exc)}") from None
    (width, height), limit = info[2], Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise DdcatError(f"cannot read {kind} {path}: {width}x{height} = {width * height} pixels exceeds the limit of "
                         f"{int(limit)} pixels (a possible decompression bomb; PIL.Image.MAX_IMAGE_PIXELS)")
    try:
        cut = truncated(path, info[0])
    except OSError as exc:
        raise DdcatError(f"cannot read {kind} {path}: {exc.strerror or exc}") from None
    if cut:
        raise DdcatError(f"cannot read {kind} {path}: the file is truncated (no {'IEND chunk' if info[0] == 'PNG' else 'end-of-image marker'})")
    return info


def check_pair(image: Path, label: Path, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
    """Check one ``(image, label)`` pair as described in the module docstring; DdcatError naming the file."""
    _, _, image_size = _header(image, "image")
    _, mode, label_size = _header(label, "label")
    if mode not in _LABEL_MODES:
        raise DdcatError(f"label {label} must be a single-channel PNG of class indices, got mode {mode}")
    if image_size != label_size:
        (iw, ih), (lw, lh) = image_size, label_size
        raise DdcatError(f"image {image} is {iw}x{ih} but label {label} is {lw}x{lh} (width x height)")
    if label_size[0] * label_size[1] <= DECODE_LABEL_PIXELS:  # within MAX_IMAGE_PIXELS: checked by _header
        load_label(label, num_classes, ignore_index)


def _stamp(path: Path) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


CACHE_NAME = ".ddcat-check-cache.json"


def cache_path(root: Path) -> Path:
    """Where the check's results for the data root ``root`` are kept: ``$DDCAT_CACHE/data-check/<hash
    of the root>.json`` when that variable is set; else ``<root>/.ddcat-check-cache.json`` when the
    data root is writable (the cache goes with the data, and every user of a shared tree profits);
    else ``$XDG_CACHE_HOME/ddcat`` (``~/.cache/ddcat``) ``/data-check/<hash of the root>.json`` (a
    read-only tree). Never inside ``--out``: a refused run writes nothing there."""
    root = Path(root).resolve()
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    if os.environ.get("DDCAT_CACHE"):
        return Path(os.environ["DDCAT_CACHE"]) / "data-check" / f"{digest}.json"
    beside = root / CACHE_NAME
    if root.is_dir() and os.access(root, os.W_OK | os.X_OK) and (not beside.exists() or os.access(beside, os.W_OK)):
        return beside
    base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ddcat")
    return Path(base) / "data-check" / f"{digest}.json"


def _read_cache(path: Path) -> dict[str, list]:
    try:
        data = json.loads(path.read_text()[: 1 << 28])
        if isinstance(data, dict) and data.get("version") == CACHE_VERSION and isinstance(data.get("files"), dict):
            return data["files"]
    except (OSError, ValueError):
        pass
    return {}  # missing, unreadable or from another version: everything is checked again


def _write_cache(path: Path, files: dict[str, list]) -> None:
    """Best effort, atomic: a cache that cannot be written only costs the next run a full check."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError:
        return
    try:
        os.fchmod(fd, 0o644)  # readable by the other users of a shared data root (mkstemp: 0600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"version": CACHE_VERSION, "files": files}, fh)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def check_pairs(
    pairs: Sequence[tuple[Path, Path]],
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    cache: Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    desc: str = "check data",
) -> dict[str, int]:
    """Check every pair (see the module docstring) before anything is written; raise the
    :class:`DdcatError` of the first failing pair in list order. ``cache``: the JSON file of earlier
    results (``None``: no cache). Returns ``{"pairs", "checked", "cached"}`` counts."""
    from tqdm import tqdm

    cached = _read_cache(cache) if cache is not None else {}
    todo: list[int] = []
    stamps: list[list[int] | None] = []
    for n, (image, label) in enumerate(pairs):
        key = f"{image}\0{label}"
        try:
            stamp = [*_stamp(image), *_stamp(label), int(num_classes), int(ignore_index)]
        except OSError:
            stamp = None  # vanished since the list was read: the check below names it
        stamps.append(stamp)
        if stamp is None or cached.get(key) != stamp:
            todo.append(n)

    def one(n: int) -> str | None:
        image, label = pairs[n]
        try:
            check_pair(image, label, num_classes, ignore_index)
        except DdcatError as exc:
            return str(exc)
        except OSError as exc:
            return f"cannot read {exc.filename or label}: {exc.strerror or exc}"
        return None

    failures: dict[int, str] = {}
    workers = workers or min(8, (os.cpu_count() or 1) + 2)
    bar = tqdm(total=len(todo), desc=desc, unit="pair", disable=not progress or not todo, dynamic_ncols=True, mininterval=0.5)
    # PIL warns (DecompressionBombWarning) on opening an image above MAX_IMAGE_PIXELS, which _header
    # refuses by itself: silenced here, in the calling thread, before the pool starts and until it
    # has ended (catch_warnings swaps process-wide state: never inside the workers)
    with warnings.catch_warnings(), bar:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if workers <= 1 or len(todo) < 8:
            for n in todo:
                error = one(n)
                bar.update(1)
                if error is not None:
                    failures[n] = error
        else:
            with ThreadPoolExecutor(workers) as pool:
                for n, error in zip(todo, pool.map(one, todo, chunksize=16)):
                    bar.update(1)
                    if error is not None:
                        failures[n] = error
    if cache is not None and len(todo) > len(failures):
        for n in todo:
            if n not in failures and stamps[n] is not None:
                image, label = pairs[n]
                cached[f"{image}\0{label}"] = stamps[n]
        _write_cache(cache, cached)
    if failures:
        first = min(failures)
        more = len(failures) - 1
        raise DdcatError(failures[first] + (f" (and {more} more file(s) fail the check)" if more else ""))
    return {"pairs": len(pairs), "checked": len(todo), "cached": len(pairs) - len(todo)}


def check_dataset(dataset: object, progress: bool = True, use_cache: bool = True, desc: str = "check data") -> dict[str, int] | None:
    """:func:`check_pairs` over a :class:`~ddcat.data.listfile.ListDataset`'s items (its root's
    cache) with the label values the dataset allows on disk (its ``raw_label_values()``: ``0..K-1``
    or 255 for list files, ``0..150`` for ADE20K); ``None`` for datasets without files (the synthetic set)."""
    items = getattr(dataset, "items", None)
    if items is None:
        return None
    root = Path(getattr(dataset, "root"))
    n, extra = dataset.raw_label_values()
    return check_pairs(items, n, extra, cache=cache_path(root) if use_cache else None, progress=progress, desc=desc)


def check_config_data(cfg: dict, split: str, progress: bool = True) -> dict[str, int] | None:
    """Check the ``split`` list of the dataset ``cfg`` describes, unless ``data.check`` is off."""
    from ddcat.data.build import build_dataset

    if not cfg["data"].get("check", True) or cfg["data"]["name"] == "synthetic":
        return None
    return check_dataset(build_dataset(cfg, split), progress=progress, desc=f"check {split} data")


__all__ = ["CACHE_NAME", "DECODE_LABEL_PIXELS", "cache_path", "check_config_data", "check_dataset", "check_pair", "check_pairs", "truncated"]

"""The model artifact: ``PATH.npz`` (weights) + ``PATH.json`` (metadata), saved atomically.

Weights are written with ``np.savez`` and read with ``allow_pickle=False``; the JSON
carries everything needed to rebuild the network (kind, layers, options), the class
alphabet, the input scheme, the training history and the sha256 of the ``.npz`` bytes.
With ``"non_character": true`` the network has one output more than there are classes:
the last one, for non-character examples (``ocr_service.negatives``), is never an answer.
Both files go to temporary names and are renamed into place, JSON last. Before the new
``.npz`` replaces the old one, the old weights are kept under a hidden name holding their
checksum (``.NAME.<sha256>.npz.bak``) until the new JSON is in place: a reader that meets
the new ``.npz`` with the old JSON -- during a save, or after a writer was killed between
the two renames -- loads the old pair from that backup. So a reader sees the old model or
the new one, never a torn or mismatched pair.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sysconfig
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .config import ENV_PREFIX
from .features import FEATURES, input_size
from .nn import Network, network_from_config
from .schemes import SCHEMES

__all__ = [
    "COMPUTED_FIELDS",
    "FORMATS",
    "ArtifactSpec",
    "ChecksumMismatchError",
    "ModelArtifact",
    "ModelError",
    "ModelFormatError",
    "ModelNotFoundError",
    "ShapeMismatchError",
    "artifact_paths",
    "atomic_write",
    "default_model_path",
    "load_model",
    "save_model",
]

#: Artifact formats this version reads. 1: the network reads the image's pixels. 2: the
#: metadata's ``input.features`` says what it reads; a server that predates the field refuses
#: such a model (an unknown format) instead of feeding it pixels, and one that predates a
#: feature kind refuses it by name. Pixel models are written as format 1, so older servers
#: still read them.
FORMATS = (1, 2)
_REPO_ROOT = Path(__file__).resolve().parent.parent
#: where a wheel install puts the shipped model (pyproject's data-files)
_INSTALLED_MODELS = Path(sysconfig.get_path("data")) / "share" / "ocr-service" / "models"


#: metadata fields ``save_model`` computes itself from the network and the weights
COMPUTED_FIELDS = ("format", "kind", "layers", "options", "sha256", "created", "version")


@dataclass(frozen=True)
class ArtifactSpec:
    """What the saver of a network states about it; ``save_model`` adds ``COMPUTED_FIELDS``.

    The one place where an artifact's given metadata is assembled (``ocr-train``, the test
    fixtures): the classes, the input the network reads, the reject threshold, and what
    training and evaluation recorded.
    """

    classes: Sequence[str]
    scheme: str
    height: int
    width: int
    #: what the network reads of each image (``features.FEATURES``)
    features: str
    name: str | None = None
    #: whether the network has a last output for non-characters (never an answer)
    non_character: bool = False
    reject_threshold: float | None = None
    #: how the threshold was chosen, in words
    calibration_rule: str | None = None
    #: dataset, seed, epochs, config, history, ... as training recorded them
    training: dict[str, Any] = field(default_factory=dict)
    #: test_accuracy, test_size, ... as evaluation measured them
    metrics: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        """The JSON fields, in the artifact's order (empty ``training``/``metrics`` left out)."""
        calibration: dict[str, Any] = {"reject_threshold": self.reject_threshold}
        if self.calibration_rule:
            calibration["rule"] = self.calibration_rule
        meta: dict[str, Any] = {} if self.name is None else {"name": self.name}
        meta.update({
            "classes": list(self.classes),
            "non_character": bool(self.non_character),
            "input": {"height": int(self.height), "width": int(self.width),
                      "scheme": self.scheme, "features": self.features},
            "preprocess": {"scheme": self.scheme, "ink": "1.0", "paper": "0.0"},
            "calibration": calibration,
        })  # fmt: skip
        for key in ("training", "metrics"):
            if getattr(self, key):
                meta[key] = dict(getattr(self, key))
        return meta


class ModelError(Exception):
    """A model artifact cannot be loaded or saved."""


class ModelNotFoundError(ModelError):
    """``PATH.npz`` or ``PATH.json`` does not exist."""


class ModelFormatError(ModelError):
    """The metadata is not valid JSON, has an unknown format or misses fields."""


class ChecksumMismatchError(ModelError):
    """The ``.npz`` bytes do not match the sha256 recorded in the JSON."""


class ShapeMismatchError(ModelError):
    """The stored weights do not fit the network described by the JSON."""


@dataclass(frozen=True)
class ModelArtifact:
    """A loaded model: the rebuilt network plus its metadata."""

    network: Network
    metadata: dict[str, Any] = field(repr=False)
    path: Path

    @property
    def classes(self) -> list[str]:
        return list(self.metadata["classes"])

    @property
    def kind(self) -> str:
        return str(self.metadata["kind"])

    @property
    def scheme(self) -> str:
        return str(self.metadata["input"]["scheme"])

    @property
    def features(self) -> str:
        """What the network reads of an input image (``features.FEATURES``); artifacts
        written before the field existed read pixels."""
        return str(self.metadata["input"].get("features", "pixels"))

    @property
    def input_shape(self) -> tuple[int, int]:
        spec = self.metadata["input"]
        return int(spec["height"]), int(spec["width"])

    @property
    def version(self) -> str:
        return str(self.metadata["version"])

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or self.path.name)

    @property
    def non_character(self) -> bool:
        """Whether the network's last output is the non-character class."""
        return bool(self.metadata.get("non_character", False))

    def given_metadata(self) -> dict[str, Any]:
        """The metadata without ``COMPUTED_FIELDS``: what saving another network as this
        one's successor passes to ``save_model``."""
        return {k: v for k, v in self.metadata.items() if k not in COMPUTED_FIELDS}

    def summary(self) -> dict[str, Any]:
        """What ``GET /v1/model`` shows of the artifact: the training record without its
        per-epoch history (only how many epochs ran)."""
        meta = self.metadata
        training = {k: v for k, v in meta.get("training", {}).items() if k != "history"}
        history = meta.get("training", {}).get("history") or []
        if history:
            training["epochs_run"] = len(history)
        return {
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "classes": self.classes,
            "non_character": self.non_character,
            "input": meta.get("input"),
            "metrics": meta.get("metrics", {}),
            "calibration": meta.get("calibration", {}),
            "training": training,
            "created": meta.get("created"),
            "sha256": meta.get("sha256"),
        }

    @property
    def reject_threshold(self) -> float | None:
        value = self.metadata.get("calibration", {}).get("reject_threshold")
        return None if value is None else float(value)


def default_model_path() -> Path:
    """``$OCR_MODEL_PATH`` if set (``~`` expanded, as the service's settings do), else the
    shipped ``models/default``: the checkout's, or, for a wheel install, the copy installed
    under ``<prefix>/share/ocr-service/models``."""
    configured = os.environ.get(f"{ENV_PREFIX}MODEL_PATH")
    if configured:
        return strip_suffix(Path(configured).expanduser())
    checkout = _REPO_ROOT / "models" / "default"
    if artifact_paths(checkout)[1].exists() or not artifact_paths(
        _INSTALLED_MODELS / "default"
    )[1].exists():
        return checkout
    return _INSTALLED_MODELS / "default"


def strip_suffix(path: str | os.PathLike[str]) -> Path:
    """``models/x.npz`` / ``models/x.json`` / ``models/x`` -> ``models/x``."""
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".npz", ".json") else p


def artifact_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The ``(weights .npz, metadata .json)`` pair of an artifact base path."""
    base = strip_suffix(path)
    return base.with_name(base.name + ".npz"), base.with_name(base.name + ".json")


def atomic_write(target: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over ``target``."""
    import tempfile  # only writers use it: readers (ocr-predict, the server) start sooner

    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        # mkstemp creates 0600; a model must stay readable by a server running as another user
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# read once at import: os.umask() briefly changes process state, unsafe in threads
_UMASK = _read_umask()


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every filesystem
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_model(
    path: str | os.PathLike[str], network: Network, metadata: ArtifactSpec | dict[str, Any]
) -> ModelArtifact:
    """Save ``network`` with ``metadata`` (an ``ArtifactSpec``, or its fields as a dict:
    classes, input, training, metrics, ...).

    Fills ``COMPUTED_FIELDS``. Returns the artifact as a reader would load it.
    """
    if isinstance(metadata, ArtifactSpec):
        metadata = metadata.metadata()
    npz_path, json_path = artifact_paths(path)
    classes = metadata.get("classes")
    outputs = len(classes or []) + _extra_outputs(metadata)
    if not classes or outputs != network.n_classes:
        raise ModelFormatError(
            f"metadata lists {len(classes or [])} classes"
            f"{' and a non-character class' if _extra_outputs(metadata) else ''}, "
            f"network has {network.n_classes} outputs"
        )
    spec = metadata.get("input")
    if not isinstance(spec, dict) or "features" not in spec:
        raise ModelFormatError(
            "metadata 'input' must say what the network reads: 'features' is one of "
            f"{', '.join(FEATURES)} (a network trained on one reads another wrongly, with no "
            "error)"
        )
    _validate_input(spec, network.n_inputs)
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.ascontiguousarray(v) for k, v in network.state_dict().items()})
    weights = buffer.getvalue()
    digest = hashlib.sha256(weights).hexdigest()
    config = dict(network.config())
    meta = {
        "format": 1 if spec["features"] == "pixels" else 2,
        **metadata,
        "kind": config.pop("kind"),
        "layers": config.pop("layers", []),
        "options": config,
        "sha256": digest,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "version": digest[:12],
    }
    text = json.dumps(meta, indent=1, sort_keys=False, allow_nan=False)
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    _keep_current_weights(npz_path, json_path)
    atomic_write(npz_path, weights)
    atomic_write(json_path, text.encode("utf-8"))
    _fsync_dir(npz_path.parent)
    for stale in npz_path.parent.glob(f".{npz_path.stem}.*.npz.bak"):
        with contextlib.suppress(OSError):
            stale.unlink()
    return ModelArtifact(network=network, metadata=meta, path=strip_suffix(path))


def _backup_path(npz_path: Path, sha: str) -> Path:
    return npz_path.with_name(f".{npz_path.stem}.{sha}.npz.bak")


def _keep_current_weights(npz_path: Path, json_path: Path) -> None:
    """Hard-link (or copy) the weights the current JSON describes to their backup name."""
    try:
        sha = json.loads(json_path.read_text(encoding="utf-8"))["sha256"]
        backup = _backup_path(npz_path, str(sha))
        if backup.exists():  # left by an interrupted save; it is what the JSON describes
            return
        if hashlib.sha256(npz_path.read_bytes()).hexdigest() != sha:
            return  # the current pair is already broken: nothing loadable to protect
    except (OSError, ValueError, KeyError, TypeError):
        return  # no current model
    try:
        os.link(npz_path, backup)
    except OSError:  # filesystems without hard links
        atomic_write(backup, npz_path.read_bytes())


def _validate_input(spec: Any, n_inputs: int) -> None:
    if not isinstance(spec, dict):
        raise ModelFormatError("metadata 'input' must be an object with height, width, scheme")
    scheme = spec.get("scheme")
    if scheme not in SCHEMES:
        raise ModelFormatError(f"unknown input scheme {scheme!r} (expected {sorted(SCHEMES)})")
    shape = (spec.get("height"), spec.get("width"))
    if shape != SCHEMES[scheme]:
        raise ModelFormatError(f"scheme {scheme!r} needs input {SCHEMES[scheme]}, got {shape}")
    features = spec.get("features", "pixels")
    try:
        size = input_size(*shape, features)  # refuses unknown features
    except ValueError as exc:
        raise ModelFormatError(str(exc)) from None
    if size != n_inputs:
        raise ShapeMismatchError(
            f"input {shape[0]}x{shape[1]} ({features}) does not match the network's "
            f"{n_inputs} inputs"
        )


def _read_metadata(json_path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelNotFoundError(f"model metadata not found: {json_path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{json_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ModelFormatError(f"{json_path}: metadata must be a JSON object")
    if meta.get("format") not in FORMATS or isinstance(meta.get("format"), bool):
        raise ModelFormatError(
            f"{json_path}: unknown model format {meta.get('format')!r} "
            f"(this version reads formats {', '.join(map(str, FORMATS))})"
        )
    for key in ("kind", "classes", "input", "layers", "sha256", "version"):
        if key not in meta:
            raise ModelFormatError(f"{json_path}: metadata misses {key!r}")
    if not isinstance(meta["classes"], list) or not all(
        isinstance(c, str) and c for c in meta["classes"]
    ):
        raise ModelFormatError(f"{json_path}: 'classes' must be a list of non-empty strings")
    _check_types(meta, json_path)
    return meta


#: metadata fields and the JSON types they must have where present
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "kind": str, "sha256": str, "version": str, "layers": list, "input": dict,
    "options": dict, "calibration": dict, "training": dict, "metrics": dict,
    "preprocess": dict, "name": str, "non_character": bool,
}  # fmt: skip


def _extra_outputs(meta: dict[str, Any]) -> int:
    """Network outputs beyond the classes: 1 for a non-character class."""
    return 1 if meta.get("non_character") else 0


def _check_types(meta: dict[str, Any], json_path: Path) -> None:
    """Refuse well-formed JSON whose fields have the wrong types (a hand-edited artifact)."""
    for key, expected in _FIELD_TYPES.items():
        if key in meta and not isinstance(meta[key], expected):
            raise ModelFormatError(f"{json_path}: {key!r} has the wrong type")
    if not all(isinstance(layer, dict) for layer in meta["layers"]):
        raise ModelFormatError(f"{json_path}: every entry of 'layers' must be an object")
    spec = meta["input"]
    if not (isinstance(spec.get("scheme"), str) and isinstance(spec.get("height"), int)
            and isinstance(spec.get("width"), int)):
        raise ModelFormatError(f"{json_path}: 'input' needs a scheme string and int sizes")
    if meta["format"] == 1 and spec.get("features", "pixels") != "pixels":
        raise ModelFormatError(f"{json_path}: format 1 models read pixels, not "
                               f"{spec['features']!r}")
    if meta["format"] == 2 and "features" not in spec:
        raise ModelFormatError(f"{json_path}: format 2 needs 'input.features'")
    threshold = meta.get("calibration", {}).get("reject_threshold")
    if threshold is not None and (isinstance(threshold, bool)
                                  or not isinstance(threshold, (int, float))):
        raise ModelFormatError(f"{json_path}: 'reject_threshold' must be a number or null")


def _read_weights(
    npz_path: Path, expected_sha: str
) -> tuple[dict[str, np.ndarray] | None, str]:
    """The arrays and the file's sha256; ``None`` arrays when the checksum differs."""
    try:
        raw = npz_path.read_bytes()
    except FileNotFoundError:
        raise ModelNotFoundError(f"model weights not found: {npz_path}") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != expected_sha:
        return None, digest
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}, digest
    except (ValueError, OSError, EOFError) as exc:
        raise ModelFormatError(f"{npz_path}: not a readable .npz file ({exc})") from None


def load_model(
    path: str | os.PathLike[str] | None = None, *, retries: int = 5, retry_delay: float = 0.05
) -> ModelArtifact:
    """Load and validate an artifact (default: :func:`default_model_path`).

    When the ``.npz`` does not match the JSON, the backup of the weights the JSON
    describes is used (a save is in progress or was interrupted); without one, the read is
    retried a few times, as a save may have finished meanwhile, and a mismatch that persists
    is a :class:`ChecksumMismatchError`.
    """
    base = strip_suffix(path) if path is not None else default_model_path()
    npz_path, json_path = artifact_paths(base)
    for attempt in range(retries + 1):
        meta = _read_metadata(json_path)
        state, digest = _read_weights(npz_path, meta["sha256"])
        if state is None:
            backup = _backup_path(npz_path, str(meta["sha256"]))
            with contextlib.suppress(ModelNotFoundError):
                state, _ = _read_weights(backup, meta["sha256"])
        if state is not None:
            break
        if attempt < retries:
            time.sleep(retry_delay)
    else:
        raise ChecksumMismatchError(
            f"{npz_path}: sha256 {digest[:12]}... does not match the metadata's "
            f"{str(meta['sha256'])[:12]}... (corrupt or half-written model)"
        )
    config = {"kind": meta["kind"], "layers": meta["layers"], **meta.get("options", {})}
    try:
        network = network_from_config(config)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelFormatError(f"{json_path}: invalid network description ({exc})") from None
    if len(meta["classes"]) + _extra_outputs(meta) != network.n_classes:
        raise ShapeMismatchError(
            f"{json_path}: {len(meta['classes'])} classes"
            f"{' + non-character' if _extra_outputs(meta) else ''} but the network has "
            f"{network.n_classes} outputs"
        )
    try:
        _validate_input(meta["input"], network.n_inputs)
    except (ModelFormatError, ShapeMismatchError) as exc:
        raise type(exc)(f"{json_path}: {exc}") from None
    try:
        network.load_state_dict(state)
    except ValueError as exc:
        raise ShapeMismatchError(f"{npz_path}: {exc}") from None
    for name, arr in network.state_dict().items():
        if not np.all(np.isfinite(arr)):
            raise ModelFormatError(f"{npz_path}: parameter {name} contains NaN or infinity")
    return ModelArtifact(network=network, metadata=meta, path=base)

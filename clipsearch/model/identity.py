"""Which weights made a set of embeddings.

Every image index, text collection and ONNX export records the identity of the model that
embedded it, so that embeddings of two different models are never compared: a query
encoded by another model would return confident nonsense. The spec is only how the model
was named; what decides is the weights and the preprocessing, so a moved checkpoint or its
ONNX export is the same model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from clipsearch.errors import ClipsearchError


@dataclass(frozen=True)
class ModelIdentity:
    spec: str  # how the model was named: a tag, a path, "random:ARCH"
    arch: str | None  # open_clip architecture, None for models that are not open_clip's
    weights: str  # "sha256:..." of a checkpoint, "pretrained:TAG" or "random:seed=N"
    dim: int  # embedding dimension
    image_size: int  # side of the square the image tower sees
    mean: tuple[float, ...]  # pixel normalization
    std: tuple[float, ...]

    def same_weights(self, other: ModelIdentity) -> bool:
        """Same weights and preprocessing, whatever spec named them."""
        return self.pinned() == other.pinned()

    def pinned(self) -> dict[str, Any]:
        """Everything but the spec, JSON-ready: what ``same_weights`` compares (and what
        caches of text embeddings are keyed by)."""
        return {k: v for k, v in self.as_dict().items() if k != "spec"}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, as manifests store it."""
        data = asdict(self)
        return {**data, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "model identity") -> ModelIdentity:
        """Parse a stored identity; a missing or mistyped field is a one-line error that
        names ``source`` (what it was read from: "manifest PATH")."""
        try:
            return cls(
                spec=str(data["spec"]),
                arch=None if data.get("arch") is None else str(data["arch"]),
                weights=str(data["weights"]),
                dim=int(data["dim"]),
                image_size=int(data["image_size"]),
                mean=tuple(float(x) for x in data["mean"]),
                std=tuple(float(x) for x in data["std"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            detail = f"lacks {exc}" if isinstance(exc, KeyError) else f"is invalid: {exc}"
            raise ClipsearchError(f"cannot read {source}: its model identity {detail}") from None

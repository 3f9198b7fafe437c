"""Base of every wire type: camelCase on the wire, snake_case in Python, unknown keys refused."""

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class WireModel(BaseModel):
    """Immutable pydantic model with camelCase aliases that refuses unknown fields."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        # inf/nan do not survive JSON: a spec holding one could never be read back.
        allow_inf_nan=False,
    )

    def to_wire(self) -> dict[str, object]:
        """The JSON-ready, camelCase form of this model."""
        return self.model_dump(mode="json", by_alias=True)

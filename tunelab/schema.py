"""The strict pydantic base every config section derives from (extra keys are errors)."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys fail validation; the config loader turns that into a did-you-mean."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

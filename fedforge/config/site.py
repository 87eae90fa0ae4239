"""The site config: what one participant brings to a federation, read only by that site.

```toml
id = "bank_a"                 # the participant's identity (its certificate's name)

[data]
path = "bank_a.csv"           # relative to this file; .csv .jsonl .parquet, or a saved HF dataset
# format = "csv"              # when the suffix does not say

[tls]
certs = "certs"               # from `fedforge certs`: ca.pem, participants/bank_a.pem and .key
# insecure = true             # plain text, one trusted machine only

[resources]
threads = 2                   # torch threads for local training
device = "cpu"

[choices]                     # what the federation's algorithm lets a site choose
# lora_rank = 8

[trust]                       # model factories this site runs, besides the built-in models
# factories = ["mypkg.nets:make_model"]
```

The federation config (``fedforge.config.schema``) says what the rows mean; the site
config says only where this site's rows are. Paths are resolved against the site config's
own folder, so a site folder can be moved as a whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedforge.components import ConfigError
from fedforge.params import check_id

__all__ = ["SiteConfig", "load_site", "check_id"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteDataSource(_Strict):
    path: str
    format: Literal["csv", "jsonl", "parquet", "hf", "images", "txt"] | None = None


class SiteTLS(_Strict):
    certs: str | None = None
    insecure: bool = False

    @model_validator(mode="after")
    def _one(self) -> SiteTLS:
        if self.certs is not None and self.insecure:
            raise ValueError("set tls.certs or tls.insecure, not both")
        return self


class SiteResources(_Strict):
    threads: int | None = Field(None, ge=1)
    device: str = "cpu"


class SiteTrust(_Strict):
    """What this site lets a federation run here beyond the built-in models: model
    factories by import path (``[model] name = "import"``), listed exactly. The server
    names a factory and its arguments; without this list a hostile server could name any
    importable function."""

    factories: list[str] = []


class SiteConfig(_Strict):
    id: str
    data: SiteDataSource
    tls: SiteTLS = SiteTLS()
    resources: SiteResources = SiteResources()
    trust: SiteTrust = SiteTrust()
    choices: dict[str, int | float | str | bool] = {}

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return check_id(v)


def load_site(path: str | Path) -> SiteConfig:
    """The site config at ``path``, its paths made absolute; ``ConfigError`` names the key."""
    from fedforge.config.loading import format_errors, read_document

    p = Path(path)
    doc = read_document(p)
    data = doc.get("data")
    if isinstance(data, dict) and isinstance(data.get("path"), str):
        data["path"] = str((p.parent / data["path"]).resolve())
    tls = doc.get("tls")
    if isinstance(tls, dict) and isinstance(tls.get("certs"), str):
        tls["certs"] = str((p.parent / tls["certs"]).resolve())
    try:
        return SiteConfig.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(f"site config {p}:\n{format_errors(exc)}") from None

"""One site's participant, built from its site config alone (``fedforge client --site``).

A ``Site`` reads only the file its site config names. Everything else it learns from the
server with each task (``experiment.federation_doc``): the data schema, the model, local
training and, after the preprocessing step, the federation's statistics. So a site
cannot drift from the federation, and the server never learns where a site's file is.

- ``prepare``: the site's sums and counts over its training rows (no row), or the reason
  its file does not fit the federation's schema (the server stops before round 1).
- ``fit`` / ``evaluate``: the federation's local training on the site's rows, encoded
  with the federation's preprocessing; the participant stack around it (clipping, local
  DP, compression, secure aggregation) is the transport's, as for any ``Client``.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import torch

from fedforge import components
from fedforge.client.types import Client, EvalResult, FitResult, RoundInfo
from fedforge.config.schema import ClientConfig, EvaluationConfig
from fedforge.config.site import SiteConfig
from fedforge.data.files import Table
from fedforge.data.site_data import SiteData, key
from fedforge.params import Params

__all__ = ["Site"]


class Site:
    """A ``SiteClient`` for one site config (see the module's doc)."""

    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self.id = config.id
        self._table: Table | None = None
        self._built: tuple[str, Client] | None = None
        self._lock = threading.Lock()
        self.refused: str | None = None  # why this site's data did not fit, if it did not

    def _federation(self, info: RoundInfo) -> tuple[str, dict[str, Any], SiteData]:
        text = info.options.get("federation")
        if not isinstance(text, str):
            raise ValueError(
                "the server sent no federation description with its task: it serves a "
                "federation of built-in data (fedforge client --config ... --id N joins that), "
                "not one whose sites bring their own files"
            )
        doc = json.loads(text)
        data = components.get("dataset", doc["data"]["dataset"]).model_validate(doc["data"])
        if not isinstance(data, SiteData):
            raise ValueError(f"data.dataset {doc['data']['dataset']!r} is not one sites bring")
        return text, doc, data

    def _read(self, data: SiteData) -> Table:
        if self._table is None:
            self._table = data.read(self.config.data.path, self.config.data.format)
        return self._table

    def prepare(self, info: RoundInfo) -> EvalResult:
        _, doc, data = self._federation(info)
        try:
            stats = data.local_stats(self._read(data), int(doc["seed"]), self.id)
        except ValueError as exc:  # SiteDataError, DataFileError: the file does not fit
            self.refused = str(exc)
            raise
        return EvalResult(0.0, int(stats[key("n")]), stats)

    def _client(self, info: RoundInfo) -> Client:
        text, doc, data = self._federation(info)
        with self._lock:
            if self._built is not None and self._built[0] == text:
                return self._built[1]
            from fedforge.experiment import evaluation_task, llm_client, torch_client
            from fedforge.llm.federation import TokenData

            prep = doc.get("preprocessing")
            if prep is None:
                raise ValueError("the federation's preprocessing has not been computed yet")
            seed = int(doc["seed"])
            decl = components.get("model", doc["model"]["name"]).model_validate(doc["model"])
            factory = getattr(decl, "factory", None)
            if factory is not None and factory not in self.config.trust.factories:
                raise ValueError(
                    f"the federation asks this site to run the model factory {factory!r}; a "
                    "site runs the built-in models and only the factories its site config "
                    "lists: add it to [trust] factories if you have reviewed it"
                )
            local = ClientConfig.model_validate(doc["client"])
            client: Client
            if isinstance(data, TokenData):  # a language model: one base, this site's adapter
                model, tokenizer = decl.load()  # type: ignore[attr-defined]
                blocks = data.blocks(self._read(data), tokenizer, seed, self.id)
                client = llm_client(local, model, blocks)
            else:
                cd = data.client_data(self._read(data), prep, seed, self.id)
                shape, classes = data.shape(prep)
                torch.manual_seed(seed)  # the server sends the parameters; this shapes them
                model = decl.build(shape, classes)
                task = evaluation_task(EvaluationConfig.model_validate(doc["evaluation"]), classes)
                client = torch_client(local, model, cd, task)
            self._built = (text, client)
            return client

    def fit(self, params: Params, info: RoundInfo) -> FitResult:
        return self._client(info).fit(params, info)

    def evaluate(self, params: Params, info: RoundInfo) -> EvalResult:
        return self._client(info).evaluate(params, info)

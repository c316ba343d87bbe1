"""Schema-driven fuzzing: schemathesis sends what the OpenAPI spec allows (and what it does not)
to every route, with the admin key and with the decide-only key. The store is up, so no answer
may be a 5xx: every refusal is a 4xx with a reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import cast

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from engine.api import Engine
from engine.server import ApiKeys, create_app
from tests.samples import AB_YAML, BANDIT_YAML, write_yaml

KEYS = ("Bearer fuzz-admin", "Bearer fuzz-decide")
EXPERIMENTS = ("landing", "channels", "retired")

# No route runs to build the spec, so it is read once, from an app without an engine; each test
# sends its cases to a service over its own fresh store.
schema = schemathesis.openapi.from_dict(create_app(cast(Engine, None), ApiKeys(None, None)).openapi())


@schema.hook
def before_generate_path_parameters(_: object, strategy: st.SearchStrategy) -> st.SearchStrategy:
    # Random keys only reach the 404; real ones reach the decision and report code.
    return strategy | st.fixed_dictionaries({"key": st.sampled_from(EXPERIMENTS)})


@pytest.fixture
def service(tmp_path: Path) -> Iterator[TestClient]:
    stopped = AB_YAML.replace("key: landing", "key: retired").replace(
        "status: running", "status: stopped\nwinner: curated")
    paths = [write_yaml(tmp_path, f"{n}.yaml", y) for n, y in (("l", AB_YAML), ("b", BANDIT_YAML), ("r", stopped))]
    engine = Engine.open(f"sqlite:///{tmp_path / 'fuzz.db'}", seed=0)
    engine.apply(paths)
    app = create_app(engine, ApiKeys(admin="fuzz-admin", decide="fuzz-decide"), max_body_bytes=256 * 1024)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def send(client: TestClient, case: schemathesis.Case, key: str) -> httpx.Response:
    kwargs = case.as_transport_kwargs(base_url=str(client.base_url), headers={"Authorization": key})
    kwargs.pop("cookies", None)  # none are declared
    if isinstance(kwargs.get("data"), bytes | str):
        kwargs["content"] = kwargs.pop("data")
    return client.request(**kwargs)


@schema.parametrize()
@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_no_route_answers_a_server_error(case: schemathesis.Case, service: TestClient) -> None:
    for key in KEYS:
        case.validate_response(send(service, case, key), checks=[not_a_server_error])

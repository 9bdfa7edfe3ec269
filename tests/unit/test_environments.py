"""C2D_ENVIRONMENTS: what an operator may write, and the message when it is wrong."""

from __future__ import annotations

import json

import pytest

from c2d_common.env import ConfigError
from engine_svc.api.servicer import environment_to_proto
from engine_svc.config import EngineSettings, parse_environments
from engine_svc.server import build_engine

GOOD = {
    "id": "gpu",
    "description": "one GPU",
    "cpus": 4,
    "memory_bytes": 8 << 30,
    "disk_bytes": 20 << 30,
    "max_duration_seconds": 3600,
    "gpus": 1,
    "free": False,
    "runtimes": ["python3"],
}


def test_a_gpu_environment_is_parsed_and_advertised() -> None:
    (environment,) = parse_environments(json.dumps([GOOD]))
    assert environment.gpus == 1 and environment.cpus == 4.0 and not environment.free
    advertised = environment_to_proto(environment)
    assert advertised.gpus == 1, "consumers see the GPUs they would get (Ocean never asked for them)"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"gpus": "1"}, "gpus must be a whole number"),
        ({"gpus": 0.5}, "gpus must be a whole number"),
        ({"gpus": -1}, "gpus must be a whole number"),
        ({"memory_bytes": 0}, "memory_bytes must be a positive integer"),
        ({"disk_bytes": "1G"}, "disk_bytes must be a positive integer"),
        ({"max_duration_seconds": True}, "max_duration_seconds must be a positive integer"),
        ({"cpus": "2"}, "cpus must be a positive number"),
        ({"cpus": 0}, "cpus must be a positive number"),
        ({"free": "yes"}, "free must be true or false"),
        ({"runtimes": "python3"}, "runtimes must be a list of names"),
        ({"id": ""}, "id must be a non-empty string"),
        ({"colour": "blue"}, "unexpected keyword argument 'colour'"),
    ],
)
def test_a_wrong_environment_stops_the_engine_with_what_is_wrong(
    change: dict[str, object], says: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_environments(json.dumps([GOOD | change]))
    assert says in str(refused.value)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("{", "not a JSON list"),
        ('{"id": "x"}', "not a list of objects"),
        ("[1]", "not a list of objects"),
        ("[]", "lists no environment"),
        (json.dumps([GOOD, GOOD]), "names an environment id twice"),
    ],
)
def test_a_wrong_list_stops_the_engine(raw: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_environments(raw)
    assert says in str(refused.value)


async def test_the_local_backend_refuses_to_offer_gpus() -> None:
    settings = EngineSettings(environments=parse_environments(json.dumps([GOOD])))
    with pytest.raises(ConfigError) as refused:
        build_engine(settings)
    assert "local backend cannot give" in str(refused.value)

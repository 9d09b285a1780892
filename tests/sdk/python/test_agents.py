"""The agents API through the official Python SDK."""

import pytest

from conftest import SDK_MAJOR, HTTPValidationError, SDKError, assert_complete, make_client, modern_only

FUNCTION_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city.",
        "strict": False,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

CLASSIC_TOOLS = [
    FUNCTION_TOOL,
    {"type": "web_search"},
    {"type": "web_search_premium"},
    {"type": "code_interpreter"},
    {"type": "image_generation"},
    {"type": "document_library", "library_ids": ["0197f425-5e85-7353-b8e7-e8b974b9c613"]},
]

# 1.x cannot send or parse `connector` tools, nor `tool_configuration`.
ALL_TOOLS = CLASSIC_TOOLS + (
    [
        {"type": "connector", "connector_id": "gmail", "authorization": {"type": "api-key", "value": "k"}},
    ]
    if SDK_MAJOR >= 2
    else []
)


def tool_types(agent):
    return [tool.type for tool in agent.tools]


def assert_no_unknown_tools(agent):
    for tool in agent.tools:
        assert not type(tool).__name__.startswith("Unknown"), f"{tool!r} was not parsed"


def test_create_with_every_tool_type_round_trips(client, unique):
    agent = client.beta.agents.create(
        model="mistral-medium-latest",
        name=unique,
        description="Every tool type.",
        instructions="Use the tools.",
        tools=ALL_TOOLS,
        completion_args={"temperature": 0.3, "top_p": 0.95},
    )

    assert_complete(agent)
    assert agent.id.startswith("ag_")
    assert agent.version == 0
    assert tool_types(agent) == [t["type"] for t in ALL_TOOLS]
    assert_no_unknown_tools(agent)
    assert agent.completion_args.temperature == 0.3
    fetched = client.beta.agents.get(agent_id=agent.id)
    assert tool_types(fetched) == tool_types(agent)
    assert fetched.tools[0].function.name == "get_weather"
    assert fetched.tools[5].library_ids == ["0197f425-5e85-7353-b8e7-e8b974b9c613"]


def test_update_makes_a_new_version_and_update_version_switches_back(client, unique):
    agent = client.beta.agents.create(model="mistral-medium-2505", name=unique, description="first")

    updated = client.beta.agents.update(
        agent_id=agent.id, description="An edited simple agent.", completion_args={"temperature": 0.3, "top_p": 0.95}
    )
    switched = client.beta.agents.update_version(agent_id=agent.id, version=0)

    assert updated.version == 1
    assert updated.description == "An edited simple agent."
    assert updated.completion_args.top_p == 0.95
    assert switched.version == 0
    assert switched.description == "first"
    assert client.beta.agents.get(agent_id=agent.id).version == 0


def test_update_with_none_clears_a_field_and_leaves_the_rest(client, unique):
    agent = client.beta.agents.create(model="m", name=unique, instructions="keep me", description="drop me")

    updated = client.beta.agents.update(agent_id=agent.id, description=None, tools=[{"type": "web_search"}])

    assert updated.description is None
    assert updated.instructions == "keep me"
    assert tool_types(updated) == ["web_search"]


def test_list_finds_agents_with_the_default_query(client, unique):
    agent = client.beta.agents.create(model="m", name=unique)

    listed = client.beta.agents.list(page=0, page_size=100)

    assert agent.id in [a.id for a in listed]


@modern_only
def test_list_filters_and_metadata(client, unique):
    tagged = client.beta.agents.create(model="m", name=unique, metadata={"suite": unique})
    client.beta.agents.create(model="m", name=unique + "-other")

    by_name = client.beta.agents.list(name=unique)
    by_metadata = client.beta.agents.list(metadata={"suite": unique})
    by_search = client.beta.agents.list(search=unique)

    assert [a.id for a in by_name] == [tagged.id]
    assert [a.id for a in by_metadata] == [tagged.id]
    assert len(by_search) == 2


@modern_only
def test_list_pages_walks_every_page(client, unique):
    ids = [client.beta.agents.create(model="m", name=unique).id for _ in range(5)]

    seen = []
    page = client.beta.agents.list_pages(page_size=2, name=unique)
    while page is not None:
        seen.extend(a.id for a in page.result.data)
        page = page.next()

    assert seen == list(reversed(ids))


@modern_only
def test_versions_can_be_listed_and_fetched(client, unique):
    agent = client.beta.agents.create(model="m", name=unique, description="v0")
    client.beta.agents.update(agent_id=agent.id, description="v1")
    client.beta.agents.update(agent_id=agent.id, description="v2")

    versions = client.beta.agents.list_versions(agent_id=agent.id)
    one = client.beta.agents.get_version(agent_id=agent.id, version="1")
    pinned = client.beta.agents.get(agent_id=agent.id, agent_version=1)

    assert_complete(versions)
    assert [v.version for v in versions] == [0, 1, 2]
    assert [v.description for v in versions] == ["v0", "v1", "v2"]
    assert one.description == "v1"
    assert one.versions == [0, 1, 2]
    assert pinned.description == "v1"


@modern_only
def test_aliases_point_at_versions(client, unique):
    agent = client.beta.agents.create(model="m", name=unique, description="v0")
    client.beta.agents.update(agent_id=agent.id, description="v1")

    alias = client.beta.agents.create_version_alias(agent_id=agent.id, alias="prod", version=0)
    by_alias = client.beta.agents.get(agent_id=agent.id, agent_version="prod")
    client.beta.agents.create_version_alias(agent_id=agent.id, alias="prod", version=1)
    aliases = client.beta.agents.list_version_aliases(agent_id=agent.id)
    client.beta.agents.delete_version_alias(agent_id=agent.id, alias="prod")

    assert alias.alias == "prod" and alias.version == 0
    assert by_alias.description == "v0"
    assert [(a.alias, a.version) for a in aliases] == [("prod", 1)]
    assert client.beta.agents.list_version_aliases(agent_id=agent.id) == []


@modern_only
def test_delete_removes_the_agent(client, unique):
    agent = client.beta.agents.create(model="m", name=unique)

    client.beta.agents.delete(agent_id=agent.id)

    with pytest.raises(SDKError) as raised:
        client.beta.agents.get(agent_id=agent.id)
    assert raised.value.status_code == 404


def test_invalid_input_raises_the_validation_error_naming_the_field(client):
    with pytest.raises(HTTPValidationError) as raised:
        client.beta.agents.create(model="m", name="a", completion_args={"top_p": 5})

    assert list(raised.value.data.detail[0].loc) == ["body", "completion_args", "top_p"]


def test_a_blank_name_is_rejected_with_its_location(client):
    with pytest.raises(HTTPValidationError) as raised:
        client.beta.agents.create(model="m", name="   ")

    assert list(raised.value.data.detail[0].loc) == ["body", "name"]


@modern_only
def test_a_bad_alias_name_is_rejected_with_its_location(client, unique):
    agent = client.beta.agents.create(model="m", name=unique)

    with pytest.raises(HTTPValidationError) as raised:
        client.beta.agents.create_version_alias(agent_id=agent.id, alias="Not Valid", version=0)

    assert list(raised.value.data.detail[0].loc) == ["query", "alias"]


def test_an_unknown_agent_is_an_sdk_error_with_status_404(client):
    with pytest.raises(SDKError) as raised:
        client.beta.agents.get(agent_id="ag_00000000000000000000000000000000")

    assert raised.value.status_code == 404
    assert "not found" in str(raised.value)


def test_a_wrong_key_is_an_sdk_error_with_status_401():
    with pytest.raises(SDKError) as raised:
        make_client("not-a-key").beta.agents.list()

    assert raised.value.status_code == 401


def test_another_keys_agents_are_invisible(client, other_client, unique):
    agent = client.beta.agents.create(model="m", name=unique)

    listed = other_client.beta.agents.list(page=0, page_size=1000)
    with pytest.raises(SDKError) as raised:
        other_client.beta.agents.get(agent_id=agent.id)

    assert agent.id not in [a.id for a in listed]
    assert raised.value.status_code == 404


def test_models_list_has_explicit_capabilities(client):
    models = client.models.list()

    assert_complete(models)
    ids = [m.id for m in models.data]
    assert "echo" in ids
    echo = models.data[ids.index("echo")]
    assert echo.capabilities.completion_chat is True
    assert echo.capabilities.vision is False

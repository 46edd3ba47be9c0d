"""What the README states as reference matches the code, so it cannot drift: every listening
address and port default in its tables (the settings classes' own defaults, and the local
launcher's ports for ``make run``), and every score field of the segmentation service (gRPC,
GraphQL and segment rules) documented with its meaning."""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

from pydantic_settings import BaseSettings

from gateway.keys_settings import KeyStoreSettings
from gateway.settings import GatewaySettings
from infra.local.stack import StackPorts
from lodestar.v1 import segmentation_pb2
from services.identity.settings import IdentitySettings
from services.platform.settings import CommonSettings, PiiSettings, ServiceSettings
from services.profile.settings import ProfileSettings
from services.recommendation.settings import RecommendationSettings
from services.segmentation.rules import FIXED_FIELDS
from services.segmentation.settings import SegmentationSettings
from services.wallet.settings import WalletSettings
from tests.support.readme import REPO, Table, readme_text, tables

SETTINGS: tuple[type[BaseSettings], ...] = (
    CommonSettings,
    ServiceSettings,
    PiiSettings,
    IdentitySettings,
    ProfileSettings,
    SegmentationSettings,
    RecommendationSettings,
    WalletSettings,
    KeyStoreSettings,
    GatewaySettings,
)
VARIABLE = re.compile(r"`(LODESTAR_[A-Z0-9_]+|_[A-Z0-9_]+)`")
# A host, a port, or both, as a table cell writes them: `127.0.0.1:50051`, `:50052`, `8000`.
ADDRESS = re.compile(
    r"(?:[a-z]+://)?(?:(?P<host>\d{1,3}(?:\.\d{1,3}){3}|localhost)(?::(?P<port>\d{2,5}))?"
    r"|:(?P<port2>\d{2,5})|(?P<bare>\d{2,5}))(?:/\S*)?"
)
DOOR = re.compile(r"_(HOST|PORT|ADDR)$")


def variable_of(field_name: str, alias: Any) -> str:
    """The environment variable of a settings field (its alias, or ``LODESTAR_<NAME>``)."""
    return alias if isinstance(alias, str) else f"LODESTAR_{field_name.upper()}"


def settings_defaults() -> dict[str, set[str]]:
    """Every ``LODESTAR_*`` variable of the settings classes with its default(s), read from
    the classes themselves (no environment involved)."""
    found: dict[str, set[str]] = {}
    for cls in SETTINGS:
        for name, info in cls.model_fields.items():
            if info.is_required():
                continue
            default = info.get_default(call_default_factory=True)
            found.setdefault(variable_of(name, info.validation_alias), set()).add(str(default))
    return found


def launcher_defaults() -> dict[str, str]:
    """The port variables ``python -m infra.local`` reads, each with the port it uses when the
    variable is unset: found by setting each candidate and seeing which port moves."""
    base = StackPorts.from_env({})
    flat = _flatten(base)
    candidates = {f"LODESTAR_{name}" for name in _port_variable_names()}
    found = {}
    for variable in candidates:
        moved = _flatten(StackPorts.from_env({variable: "1"}))
        changed = [key for key, port in moved.items() if port != flat[key]]
        if len(changed) == 1:
            found[variable] = str(flat[changed[0]])
    return found


def _flatten(ports: StackPorts) -> dict[str, int]:
    flat: dict[str, int] = {}
    for item in fields(ports):
        value = getattr(ports, item.name)
        if isinstance(value, dict):
            flat.update({f"{item.name}.{k}": v for k, v in value.items()})
        else:
            flat[item.name] = value
    return flat


def _port_variable_names() -> set[str]:
    """Every ``LODESTAR_..._PORT`` name the README mentions (candidates for the launcher)."""
    return {m[len("LODESTAR_") :] for m in re.findall(r"LODESTAR_[A-Z0-9_]+_PORT", readme_text())}


def row_variables(cell: str) -> list[str]:
    """The variables a cell names; ``_HTTP_HOST`` after ``LODESTAR_WALLET_HTTP_PORT`` is
    ``LODESTAR_WALLET_HTTP_HOST`` (a suffix replaces as many words of the first name)."""
    names: list[str] = []
    for found in VARIABLE.findall(cell):
        name = found
        if found.startswith("_") and names:
            words = names[0].split("_")
            tail = found.strip("_").split("_")
            name = "_".join(words[: len(words) - len(tail)] + tail)
        names.append(name)
    return names


def stated_values(cell: str) -> list[str]:
    """The hosts, ports and host:port pairs a cell states in code spans, in order
    (``:50052`` after ``127.0.0.1:50051`` is ``127.0.0.1:50052``; URLs give their host:port)."""
    values, host = [], ""
    for span in re.findall(r"`([^`]+)`", cell):
        match = ADDRESS.fullmatch(span)
        if match is None:
            continue
        found_host, bare = match.group("host"), match.group("bare")
        port = match.group("port") or match.group("port2")
        if found_host and port:
            host = found_host
            values.append(f"{found_host}:{port}")
        elif found_host:
            values.append(found_host)
        elif port:
            values.append(f"{host}:{port}" if host else f":{port}")
        elif bare:
            values.append(bare)
    return values


def default_claims(table: Table) -> list[tuple[int, str, str]]:
    """``(line, variable, value)`` for every host/port default a settings table states: the
    "default" column where the table has one, else what follows "default" in the row."""
    claims = []
    column = table.header.index("default") if "default" in table.header else None
    for line, cells in table.rows:
        variables = [v for v in row_variables(cells[0]) if DOOR.search(v)]
        if not variables:
            continue
        if column is not None:
            text = cells[column]
        elif re.fullmatch(r"(\s*`[^`]+`\s*[/,]?)+", " ".join(cells[1:])):
            # A cell of values only (`8080` / `127.0.0.1`) states the defaults.
            text = " ".join(cells[1:])
        else:
            said = re.search(r"default[s:]?\s*([^)|;]*)", " ".join(cells[1:]))
            if said is None:
                continue
            text = said.group(1)
        values = [v for v in stated_values(text) if v]
        if not values:
            continue
        if len(values) == 1:
            values = values * len(variables)
        assert len(values) == len(variables), (
            f"README.md:{line}: {len(variables)} variables but {len(values)} defaults"
        )
        claims += [(line, v, value) for v, value in zip(variables, values, strict=True)]
    return claims


def test_settings_tables_state_the_settings_defaults() -> None:
    defaults = settings_defaults()
    launcher = launcher_defaults()
    settings_tables = [t for t in tables(readme_text()) if t.header[0] == "variable"]
    claims = [claim for table in settings_tables for claim in default_claims(table)]
    # The tables this guards, at least: gRPC ports, hosts, metrics, addresses, the wallet.
    claimed = {variable for _, variable, _ in claims}
    for expected in (
        "LODESTAR_IDENTITY_GRPC_PORT",
        "LODESTAR_WALLET_GRPC_PORT",
        "LODESTAR_GATEWAY_HTTP_HOST",
        "LODESTAR_WALLET_HTTP_HOST",
        "LODESTAR_WALLET_HTTP_PORT",
        "LODESTAR_GRPC_HOST",
        "LODESTAR_METRICS_HOST",
        "LODESTAR_METRICS_PORT",
        "LODESTAR_PROFILE_ADDR",
        "LODESTAR_RECOMMENDATION_ADDR",
    ):
        assert expected in claimed, f"no README table states the default of {expected}"
    wrong = []
    for line, variable, value in claims:
        real = defaults.get(variable) or ({launcher[variable]} if variable in launcher else None)
        if real is None:
            wrong.append(f"README.md:{line}: {variable} is no setting")
        elif value not in real:
            wrong.append(f"README.md:{line}: {variable} says {value}, the code {sorted(real)}")
    assert wrong == []


def test_the_address_table_is_what_make_run_binds() -> None:
    [table] = [t for t in tables(readme_text()) if t.header[:2] == ("part", "address (default)")]
    launcher = launcher_defaults()
    checked, wrong = 0, []
    for line, (_, address, override) in table.rows:
        hosts = {v.split(":")[0] for v in stated_values(address) if ":" in v}
        if hosts - {"", "127.0.0.1"}:
            wrong.append(f"README.md:{line}: {sorted(hosts)}, but every door binds 127.0.0.1")
        ports = [v.rsplit(":", 1)[1] for v in stated_values(address) if ":" in v]
        for variable, port in zip(
            [v for v in row_variables(override) if "<" not in v], ports, strict=False
        ):
            checked += 1
            if variable not in launcher:
                wrong.append(f"README.md:{line}: infra.local reads no {variable}")
            elif launcher[variable] != port:
                wrong.append(f"README.md:{line}: {variable} is {launcher[variable]}, not {port}")
    assert wrong == []
    assert checked >= 14, "the address table lost its rows"


def test_every_door_listens_on_loopback_by_default() -> None:
    hosts = {v: d for v, d in settings_defaults().items() if v.endswith("_HOST")}
    assert set(hosts) >= {
        "LODESTAR_GATEWAY_HTTP_HOST",
        "LODESTAR_WALLET_HTTP_HOST",
        "LODESTAR_GRPC_HOST",
        "LODESTAR_METRICS_HOST",
    }
    assert all(d == {"127.0.0.1"} for d in hosts.values()), hosts
    assert "Every door listens on 127.0.0.1 only" in readme_text()


def test_a_wrong_default_is_caught() -> None:
    table = Table(
        1,
        ("variable", "meaning"),
        ((7, ("`LODESTAR_WALLET_HTTP_PORT` / `_HTTP_HOST`", "`8080` / `0.0.0.0`, by default")),),
    )
    assert default_claims(table) == []  # no "default" before the values: not a claim
    table = Table(
        1,
        ("variable", "meaning"),
        ((7, ("`LODESTAR_WALLET_HTTP_PORT` / `_HTTP_HOST`", "(default `8080` / `0.0.0.0`)")),),
    )
    claims = default_claims(table)
    assert claims == [
        (7, "LODESTAR_WALLET_HTTP_PORT", "8080"),
        (7, "LODESTAR_WALLET_HTTP_HOST", "0.0.0.0"),
    ]
    assert "0.0.0.0" not in settings_defaults()["LODESTAR_WALLET_HTTP_HOST"]
    table = Table(
        1,
        ("variable", "meaning"),
        ((7, ("`LODESTAR_WALLET_HTTP_PORT` / `_HTTP_HOST`", "`8080` / `0.0.0.0`")),),
    )
    assert [value for *_, value in default_claims(table)] == ["8080", "0.0.0.0"]


# --- scores ------------------------------------------------------------------------------


def graphql_fields(type_name: str) -> list[str]:
    """The fields of one object type in the committed schema."""
    schema = (REPO / "gateway" / "schema.graphql").read_text()
    body = re.search(rf"type {type_name} \{{(.*?)\n\}}", schema, re.S)
    assert body is not None, type_name
    text = re.sub(r'"""[\s\S]*?"""', "", body.group(1))
    return re.findall(r"^\s+(\w+)(?:\(.*\))?:", text, re.M)


def scores_section() -> str:
    """The README's segmentation section (``## Segments and scores`` to the next ``## ``)."""
    text = readme_text()
    start = text.index("## Segments and scores")
    return text[start : text.index("\n## ", start + 1)]


def test_every_score_field_is_documented() -> None:
    section = scores_section()
    proto = [f.name for f in segmentation_pb2.CustomerScores.DESCRIPTOR.fields]
    graphql = graphql_fields("CustomerScores")
    rules = [name for name in FIXED_FIELDS if name.startswith("scores.")]
    assert len(proto) >= 12
    assert len(graphql) >= 12
    assert len(rules) >= 8
    missing = [
        f"{kind} {name}"
        for kind, names in (("gRPC", proto), ("GraphQL", graphql), ("rule", rules))
        for name in names
        if f"`{name}`" not in section
    ]
    assert missing == [], "the README's score table misses these fields"

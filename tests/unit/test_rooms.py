"""The rooms of a service, enforced by reading every module's imports (``ast``, nothing runs).

Each service under ``services/<name>/`` keeps its code in rooms (docs/architecture.md, "Rooms"):
entry and wiring (``__main__``, ``server``, ``settings``, ``cli``); doors that translate
(``api``, ``consumers``, and the HTTP doors ``webservice``/``http``); persistence (``store.py``
or a ``store/`` package); outbound clients (a ``clients/`` package); and the domain, which is
every other module. The rules below say what each room may import; every rule is one test whose
message lists the offending ``module: import`` pairs. The checker itself is proven on small
synthetic trees at the end of this file: a violating tree is caught, a clean one passes.

Imports under ``if TYPE_CHECKING:`` count too: a domain module that names the store's types
still depends on the store room.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# --- the rules, in one place ----------------------------------------------------------------

# Folders under services/ that are not services: the shared platform kit (anyone may use it).
# (services/rotate_keys.py is a module, not a folder, so it is never a service either.)
NOT_SERVICES = frozenset({"platform"})
# Entry and wiring: they build the objects and connect them, so they may import anything.
ENTRY = frozenset({"__main__", "server", "settings", "cli"})
# Doors translate a transport (gRPC, Kafka, HTTP) into domain calls and back.
DOORS = frozenset({"api", "consumers", "webservice", "http"})
# The persistence room: the one place a service talks to MongoDB.
STORE = "store"
# The outbound-clients room: APNs, Google's REST API, other services' gRPC stubs.
CLIENTS = "clients"
# MongoDB drivers: only the persistence rooms use them, so the domain reads typed records.
MONGO_LIBRARIES = ("motor", "pymongo", "bson")
# Outside services/<name>/: the modules that are a persistence kit themselves (the MongoDB
# client and write helpers, the readiness ping, the outage errors), the operator's
# key-rotation tool (it re-encrypts every service's stored fields in place) and the
# gateway's own store of API keys.
MONGO_KIT = frozenset(
    {
        "services.platform.mongo",
        "services.platform.dbops",
        "services.platform.health",
        "services.platform.errors",
        "services.rotate_keys",
        "gateway.keys_store",
    }
)
# What the domain never imports: I/O libraries and transports (the doors, the store and the
# clients own those), the Kafka bus (consumers and server.py own it) and gRPC stubs (clients).
DOMAIN_FORBIDDEN = (
    "grpc",
    "motor",
    "pymongo",
    "bson",
    "aiokafka",
    "starlette",
    "httpx",
    "uvicorn",
    "hypercorn",
    "services.platform.bus",
)
# gRPC service stubs are a client's business; the message classes (*_pb2) are data.
GRPC_STUB = re.compile(r"^lodestar\.v1\.\w+_grpc$")
# The gateway talks to Kafka only through the platform's bus, so it sees the bus's errors.
GATEWAY_FORBIDDEN = ("aiokafka",)
# Collaborators are reached through their owner: `self.passes.store.put(...)` bypasses
# `passes`; the owner gets a method instead. `self.store.x` (the owner itself) is fine.
REACH_THROUGH_ATTRIBUTE = "store"


# Settings only describe configuration: reading them must not pull in the store or a door.
SETTINGS_FORBIDDEN_ROOMS = ("store", "door", "clients")
# A command line drives the service through its wiring (server, store, domain), never through
# a door's internals (the gRPC servicer's proto mapping, a Kafka handler).
CLI_FORBIDDEN_ROOMS = ("door",)


# --- reading the code -----------------------------------------------------------------------


@dataclass(frozen=True)
class Module:
    """One Python module: its dotted name, its file, and (inside a service) its room."""

    name: str
    path: Path
    service: str | None

    @property
    def room(self) -> str:
        """``entry``, ``door``, ``store``, ``clients`` or ``domain`` (outside a service:
        ``outside``)."""
        if self.service is None:
            return "outside"
        parts = self.name.split(".")[2:]  # after services.<name>
        first = parts[0] if parts else "__init__"
        if first == STORE:
            return "store"
        if first == CLIENTS:
            return "clients"
        if len(parts) == 1 and first in ENTRY:
            return "entry"
        if len(parts) == 1 and first in DOORS:
            return "door"
        return "domain"


def modules_under(root: Path, top: str) -> Iterator[Module]:
    """Every module of the package folder ``root/top`` (e.g. ``services``, ``gateway``)."""
    for path in sorted((root / top).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        service = None
        if top == "services" and len(parts) >= 2 and (root / "services" / parts[1]).is_dir():
            service = parts[1] if parts[1] not in NOT_SERVICES else None
        yield Module(name, path, service)


def imports_of(module: Module) -> list[str]:
    """Every module ``module`` imports, relative imports resolved; ``from x import y`` gives
    both ``x`` and ``x.y`` (``y`` may be a submodule)."""
    tree = ast.parse(module.path.read_text(), str(module.path))
    package = module.name.split(".")
    if module.path.name != "__init__.py":
        package = package[:-1]
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            source = ".".join([*base, *([node.module] if node.module else [])])
            if node.module:
                found.append(source)
            found += [f"{source}.{alias.name}" for alias in node.names if alias.name != "*"]
    return found


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _pairs(found: list[tuple[Module, str]]) -> list[str]:
    """``module: import`` lines, sorted; ``from x import y`` shows as ``x`` alone when ``x``
    itself offends (``y`` then says nothing more)."""
    pairs = {(module.name, imported) for module, imported in found}
    return sorted(
        f"{name}: {imported}"
        for name, imported in pairs
        if (name, imported.rpartition(".")[0]) not in pairs
    )


# --- the rules as checks (each returns the offending pairs) ------------------------------------


def cross_service_imports(root: Path) -> list[str]:
    """(a) A service never imports another service: shared words live in the platform kit or
    the protos, so each service can be read, tested and deployed alone."""
    services = {m.service for m in modules_under(root, "services") if m.service}
    found = []
    for module in modules_under(root, "services"):
        if module.service is None:
            continue
        for imported in imports_of(module):
            parts = imported.split(".")
            other = parts[1] if len(parts) >= 2 and parts[0] == "services" else None
            if other in services and other != module.service:
                found.append((module, imported))
    return _pairs(found)


def mongo_outside_the_store(root: Path) -> list[str]:
    """(b) Only the persistence rooms import motor/pymongo/bson: the store returns typed
    records, and a MongoDB change touches one file per service."""
    found = []
    for top in ("services", "gateway"):
        for module in modules_under(root, top):
            if module.room == "store" or module.name in MONGO_KIT:
                continue
            found += [
                (module, imported)
                for imported in imports_of(module)
                if any(_under(imported, lib) for lib in MONGO_LIBRARIES)
            ]
    return _pairs(found)


def domain_io_imports(root: Path) -> list[str]:
    """(c) Domain modules import no I/O: no transport, driver or HTTP library, no bus, no
    gRPC stub, and not their own service's store or clients (they get those injected)."""
    found = []
    for module in modules_under(root, "services"):
        if module.room != "domain":
            continue
        own = f"services.{module.service}"
        forbidden = (*DOMAIN_FORBIDDEN, f"{own}.{STORE}", f"{own}.{CLIENTS}")
        found += [
            (module, imported)
            for imported in imports_of(module)
            if any(_under(imported, bad) for bad in forbidden) or GRPC_STUB.match(imported)
        ]
    return _pairs(found)


def store_reach_through(root: Path) -> list[str]:
    """(d) No ``x.<owner>.store.<y>`` chains: a collaborator's store is reached through a
    method of its owner, never around it."""
    found = []
    for module in modules_under(root, "services"):
        for node in ast.walk(ast.parse(module.path.read_text(), str(module.path))):
            if not (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == REACH_THROUGH_ATTRIBUTE
            ):
                continue
            owner = node.value.value
            # self.store.y (and cls.store.y) is the owner using its own store.
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            found.append((module, f"line {node.lineno}: {ast.unparse(node)}"))
    return _pairs(found)


def gateway_kafka_imports(root: Path) -> list[str]:
    """(e) The gateway imports nothing from aiokafka: it publishes through the platform bus
    and handles the bus's own errors."""
    found = [
        (module, imported)
        for module in modules_under(root, "gateway")
        for imported in imports_of(module)
        if any(_under(imported, bad) for bad in GATEWAY_FORBIDDEN)
    ]
    return _pairs(found)


def entry_imports(root: Path) -> list[str]:
    """(f) ``settings`` imports no store, door or client, and ``cli`` no door: configuration
    is read without the I/O it configures, and a command line uses the wiring, not a door."""
    rooms = {m.name: m.room for m in modules_under(root, "services")}
    limits = {"settings": SETTINGS_FORBIDDEN_ROOMS, "cli": CLI_FORBIDDEN_ROOMS}
    found = []
    for module in modules_under(root, "services"):
        last = module.name.rsplit(".", 1)[-1]
        if module.room != "entry" or last not in limits:
            continue
        own = f"services.{module.service}."
        found += [
            (module, imported)
            for imported in imports_of(module)
            if imported.startswith(own) and rooms.get(imported) in limits[last]
        ]
    return _pairs(found)


def production_reaching_tooling(root: Path) -> list[str]:
    """(h) What ships (``services``, ``gateway``) imports neither the local launcher and its
    stand-ins (``infra``) nor the tests: a service image holds neither."""
    found = [
        (module, imported)
        for top in ("services", "gateway")
        for module in modules_under(root, top)
        for imported in imports_of(module)
        if _under(imported, "infra") or _under(imported, "tests")
    ]
    return _pairs(found)


def import_cycles(root: Path) -> list[str]:
    """(g) The import graph of ``services``, ``gateway`` and ``infra`` has no circles, not even
    through an import deferred into a function: each module can be read after the ones it
    uses. Returns one line per circle, its modules sorted."""
    modules = [m for top in ("services", "gateway", "infra") for m in modules_under(root, top)]
    names = {m.name for m in modules}
    graph = {m.name: {i for i in imports_of(m) if i in names and i != m.name} for m in modules}
    return sorted(" -> ".join(sorted(c)) for c in _strongly_connected(graph) if len(c) > 1)


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's components, iteratively (the graph has hundreds of modules)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                found.append(component)
    return found


# --- the rules on this repository --------------------------------------------------------------


def test_no_service_imports_another_service() -> None:
    found = cross_service_imports(ROOT)
    assert found == [], "services importing another service:\n" + "\n".join(found)


def test_only_the_store_imports_the_mongodb_drivers() -> None:
    found = mongo_outside_the_store(ROOT)
    assert found == [], "motor/pymongo/bson outside a store module:\n" + "\n".join(found)


def test_domain_modules_do_no_io() -> None:
    found = domain_io_imports(ROOT)
    assert found == [], "domain modules importing I/O, store or clients:\n" + "\n".join(found)


def test_no_reach_through_a_collaborators_store() -> None:
    found = store_reach_through(ROOT)
    assert found == [], "x.<owner>.store.<y> reach-through:\n" + "\n".join(found)


def test_settings_and_command_lines_keep_out_of_the_doors() -> None:
    found = entry_imports(ROOT)
    assert found == [], "settings or cli importing a store, door or client:\n" + "\n".join(found)


def test_the_gateway_does_not_import_aiokafka() -> None:
    found = gateway_kafka_imports(ROOT)
    assert found == [], "gateway modules importing aiokafka:\n" + "\n".join(found)


def test_what_ships_imports_no_local_tooling() -> None:
    found = production_reaching_tooling(ROOT)
    assert found == [], "services or gateway importing infra or tests:\n" + "\n".join(found)


def test_the_import_graph_has_no_circles() -> None:
    found = import_cycles(ROOT)
    assert found == [], "modules importing each other:\n" + "\n".join(found)


# --- the checker, proven on synthetic trees ----------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in {"services/__init__.py": "", "gateway/__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


CLEAN = {
    "services/platform/__init__.py": "",
    "services/platform/mongo.py": "import motor.motor_asyncio\n",
    "services/platform/bus.py": "import aiokafka\n",
    "services/rotate_keys.py": "from pymongo.errors import PyMongoError\n",
    "services/shop/__init__.py": "",
    "services/shop/server.py": (
        "import grpc\nfrom services.platform.bus import Bus\nfrom services.shop.store import S\n"
        "from services.shop.clients.mail import Mail\nfrom lodestar.v1 import shop_pb2_grpc\n"
    ),
    "services/shop/api.py": "import grpc\nfrom lodestar.v1 import shop_pb2, shop_pb2_grpc\n",
    "services/shop/consumers.py": "from services.platform.bus import Handler\n",
    "services/shop/webservice.py": "from starlette.requests import Request\n",
    "services/shop/store.py": "from pymongo import ReturnDocument\nimport bson\n",
    "services/shop/clients/__init__.py": "",
    "services/shop/clients/mail.py": "import httpx\n",
    "services/shop/orders.py": (
        "from typing import Protocol\nfrom lodestar.v1 import shop_pb2\n"
        "from services.platform.errors import NotFound\nfrom . import prices\n"
        "class Orders:\n    def put(self) -> None:\n        self.store.put_order()\n"
    ),
    "services/shop/prices.py": "from services.platform.errors import NotFound\n",
    "services/till/__init__.py": "",
    "services/till/server.py": "from services.platform.topics import ORDERS\n",
    "gateway/ingest.py": "from services.platform.bus import BusError\n",
    "gateway/keys_store.py": "from motor.motor_asyncio import AsyncIOMotorClient\n",
}


def test_a_clean_tree_passes_every_rule(tmp_path: Path) -> None:
    root = _tree(tmp_path, CLEAN)
    assert cross_service_imports(root) == []
    assert mongo_outside_the_store(root) == []
    assert domain_io_imports(root) == []
    assert store_reach_through(root) == []
    assert gateway_kafka_imports(root) == []
    assert entry_imports(root) == []
    assert import_cycles(root) == []
    assert production_reaching_tooling(root) == []


def test_a_service_reaching_the_launcher_is_caught(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            **CLEAN,
            # Deferred into one command, as the recommendation CLI once did: still caught.
            "services/shop/cli.py": "def evaluate():\n    from infra.local.demo_eval import run\n",
            "gateway/app.py": "from tests.support.keys import KEY\n",
        },
    )
    assert production_reaching_tooling(root) == [
        "gateway.app: tests.support.keys",
        "services.shop.cli: infra.local.demo_eval",
    ]


def test_a_circle_of_imports_is_caught(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            **CLEAN,
            # Deferred into a function, as the gateway's schema once did: still a circle.
            "gateway/schema.py": "def build():\n    from gateway.mutations import Mutation\n",
            "gateway/mutations.py": "from gateway.mutation_parts import Part\n",
            "gateway/mutation_parts.py": "from gateway.schema import Consent\n",
        },
    )
    assert import_cycles(root) == ["gateway.mutation_parts -> gateway.mutations -> gateway.schema"]


def test_settings_or_a_command_line_reaching_a_door_is_caught(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            **CLEAN,
            "services/shop/settings.py": "from services.shop.store import LIMIT\n",
            "services/shop/cli.py": (
                "from services.shop.api import to_proto\nfrom services.shop.store import S\n"
            ),
        },
    )
    assert entry_imports(root) == [
        "services.shop.cli: services.shop.api",
        "services.shop.settings: services.shop.store",
    ]


def test_rooms_are_told_apart() -> None:
    def room(name: str) -> str:
        parts = name.split(".")
        return Module(name, Path(), parts[1]).room

    assert room("services.shop.server") == "entry"
    assert room("services.shop.http") == "door"
    assert room("services.shop.store") == "store"
    assert room("services.shop.store.orders") == "store"
    assert room("services.shop.clients.mail") == "clients"
    assert room("services.shop.google.builders") == "domain"
    # A domain package's own api module is not the service's door.
    assert room("services.shop.google.api") == "domain"
    assert room("services.shop") == "domain"


def test_a_service_importing_another_is_caught(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            **CLEAN,
            "services/till/sums.py": "from services.shop.prices import total\n",
            "services/till/api.py": "from services import shop\n",
            "services/till/cli.py": "import services.shop.orders\n",
        },
    )
    assert cross_service_imports(root) == [
        "services.till.api: services.shop",
        "services.till.cli: services.shop.orders",
        "services.till.sums: services.shop.prices",
    ]


def test_mongodb_outside_the_store_is_caught(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            **CLEAN,
            "services/shop/orders.py": "from bson import ObjectId\n",
            "services/shop/server.py": "import motor.motor_asyncio\n",
            "services/platform/rules.py": "import pymongo\n",
            "gateway/schema.py": "from pymongo.errors import PyMongoError\n",
        },
    )
    assert mongo_outside_the_store(root) == [
        "gateway.schema: pymongo.errors",
        "services.platform.rules: pymongo",
        "services.shop.orders: bson",
        "services.shop.server: motor.motor_asyncio",
    ]


@pytest.mark.parametrize(
    ("source", "offending"),
    [
        ("import grpc\n", "grpc"),
        ("from motor.motor_asyncio import X\n", "motor.motor_asyncio"),
        ("from starlette.requests import Request\n", "starlette.requests"),
        ("import httpx\n", "httpx"),
        ("import uvicorn\n", "uvicorn"),
        ("from hypercorn.asyncio import serve\n", "hypercorn.asyncio"),
        ("from aiokafka.errors import KafkaError\n", "aiokafka.errors"),
        ("from services.platform.bus import Bus\n", "services.platform.bus"),
        ("from services.platform import bus\n", "services.platform.bus"),
        ("from services.shop.store import ShopStore\n", "services.shop.store"),
        ("from .store import ShopStore\n", "services.shop.store"),
        ("from services.shop import clients\n", "services.shop.clients"),
        ("from ..clients.mail import Mail\n", "services.shop.clients.mail"),
        ("from lodestar.v1 import shop_pb2_grpc\n", "lodestar.v1.shop_pb2_grpc"),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .store import Row\n",
            "services.shop.store",
        ),
    ],
)
def test_a_domain_module_doing_io_is_caught(tmp_path: Path, source: str, offending: str) -> None:
    # Relative imports resolve from the module's package: ".." needs one level down.
    name = "services/shop/google/builders.py" if source.startswith("from ..") else None
    files = {**CLEAN, "services/shop/google/__init__.py": ""}
    files[name or "services/shop/orders.py"] = source
    found = domain_io_imports(_tree(tmp_path, files))
    module = "services.shop.google.builders" if name else "services.shop.orders"
    assert f"{module}: {offending}" in found
    assert all(pair.startswith(f"{module}: ") for pair in found), found


def test_the_domain_rule_leaves_the_other_rooms_alone(tmp_path: Path) -> None:
    files = dict(CLEAN)
    for room in ("server", "api", "consumers", "webservice", "http", "settings", "cli"):
        files[f"services/shop/{room}.py"] = "import grpc\nfrom services.shop.store import S\n"
    files["services/shop/store/__init__.py"] = "import motor\n"
    files["services/shop/store/orders.py"] = "import pymongo\n"
    files["services/shop/clients/mail.py"] = "import httpx\nfrom lodestar.v1 import a_pb2_grpc\n"
    assert domain_io_imports(_tree(tmp_path, files)) == []


def test_reaching_through_a_collaborators_store_is_caught(tmp_path: Path) -> None:
    source = (
        "class Api:\n"
        "    async def put(self) -> None:\n"
        "        await self.passes.store.put_offer()\n"
        "        await passes.store.put_offer()\n"
        "        self.store.fine()\n"
    )
    root = _tree(tmp_path, {**CLEAN, "services/shop/api.py": source})
    assert store_reach_through(root) == [
        "services.shop.api: line 3: self.passes.store.put_offer",
        "services.shop.api: line 4: passes.store.put_offer",
    ]


def test_the_gateway_importing_aiokafka_is_caught(tmp_path: Path) -> None:
    root = _tree(
        tmp_path, {**CLEAN, "gateway/ingest.py": "from aiokafka.errors import KafkaError\n"}
    )
    assert gateway_kafka_imports(root) == [
        "gateway.ingest: aiokafka.errors",
    ]

"""What a GraphQL operation costs, computed from its document and variables before anything
runs, and the extension that refuses an operation over the budget.

The cost is an upper bound of the work an operation asks for:

- every field costs 1 (``__typename`` and introspection cost nothing: they are answered
  from the schema in process);
- a list multiplies its children's cost by how many items it may return: the ``first`` or
  ``n`` (``MULTIPLIER_ARGS``) of the field itself or of the closest field above it that has
  one (so ``timeline(first: 20) { edges { node } }``, ``recommendations(n: 5) { items }``
  and ``customers(first: 50) { edges { node } }`` multiply what is under ``edges`` or
  ``items`` by 20, 5 or 50, and ``totalCount`` or ``pageInfo`` once), else by
  ``DEFAULT_LIST_SIZE``;
- a field that calls another service for each parent (``FAN_OUT``) adds that cost on top.

The count is taken as argument literals, variables (known only when the operation runs, so
this is an extension's ``on_execute`` rather than a cached validation rule), variable
defaults and the schema's argument defaults give it. A value that is not an integer counts
as ``DEFAULT_LIST_SIZE``: execution refuses it as a bad variable anyway. Fragments and inline
fragments count at each place they are spread (every branch of an abstract type is counted);
fragment cycles were refused by validation already, and each selection set is costed once per
multiplier so that a document's cost takes time linear in its size.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLArgument,
    GraphQLError,
    GraphQLField,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    Undefined,
    VariableNode,
    get_named_type,
    get_operation_ast,
    value_from_ast_untyped,
)
from graphql.type.definition import GraphQLInterfaceType, GraphQLObjectType
from strawberry.extensions import SchemaExtension

QUERY_TOO_COSTLY = "QUERY_TOO_COSTLY"

# --- The cost table ------------------------------------------------------------------------
# Arguments that say how many items a list (or a Relay connection's edges) returns.
MULTIPLIER_ARGS = ("first", "last", "n")
# Items assumed for a list with no such argument in scope (identifiers, consent, passes...).
DEFAULT_LIST_SIZE = 5
# Fields that call another service for each parent (batched per query, but each parent still
# costs the service a lookup), with what that call adds to the field's cost of 1.
FAN_OUT: Mapping[str, int] = {
    "customers": 10,
    "timeline": 10,
    "orderHistory": 10,
    "groups": 10,
    "segments": 10,
    "scores": 10,
    "recommendations": 10,
    "similarItems": 10,
    "frequentlyBoughtTogether": 10,
    "walletPasses": 10,
}


# Distinct counts of its size variables remembered per document (a pager asks a few).
MAX_COUNTS_PER_DOCUMENT = 32


class _Costing:
    """One operation's cost walk: the schema, its fragments and variables, and the cost of
    each selection set already walked (by node and multiplier)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: Mapping[str, Any],
    ) -> None:
        self.schema = schema
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self.given = variables
        self.variables = dict(_variable_defaults(operation))
        self.variables.update(variables)
        self.memo: dict[tuple[int, str, int | None], int] = {}
        # The variables the cost depends on, and how each was read: the cache's key.
        self.consulted: dict[str, object] = {}
        # Guards recursion on a document that validation did not see (never on a valid one).
        self.active: set[int] = set()

    def selection_set(
        self, node: SelectionSetNode | None, parent: GraphQLNamedType, size: int | None
    ) -> int:
        """The cost of ``node`` under ``parent``; ``size`` is the pending count of the
        closest ``first``/``n`` above that no list has used yet."""
        if node is None:
            return 0
        key = (id(node), parent.name, size)
        known = self.memo.get(key)
        if known is not None:
            return known
        if id(node) in self.active:
            return 0
        self.active.add(id(node))
        total = 0
        for child, child_parent in self._fields(node, parent):
            total += self.field(child, child_parent, size)
        self.active.discard(id(node))
        self.memo[key] = total
        return total

    def _fields(
        self, node: SelectionSetNode, parent: GraphQLNamedType
    ) -> Iterator[tuple[FieldNode, GraphQLNamedType]]:
        """The fields of a selection set with the type each is selected on: inline fragments
        and each named fragment spread (once per selection set) flattened in."""
        spread: set[str] = set()
        for selection in node.selections:
            if isinstance(selection, FieldNode):
                yield selection, parent
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                on = parent if condition is None else self._type(condition.name.value, parent)
                yield from self._fields(selection.selection_set, on)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in spread or id(fragment) in self.active:
                    continue
                spread.add(name)
                self.active.add(id(fragment))
                on = self._type(fragment.type_condition.name.value, parent)
                yield from self._fields(fragment.selection_set, on)
                self.active.discard(id(fragment))

    def _type(self, name: str, default: GraphQLNamedType) -> GraphQLNamedType:
        found = self.schema.get_type(name)
        return found if found is not None else default

    def field(self, node: FieldNode, parent: GraphQLNamedType, size: int | None) -> int:
        """One field: 1, its fan-out, and its children times the items it may return."""
        name = node.name.value
        if name.startswith("__"):
            return 0
        definition = _field_definition(parent, name)
        if definition is None:
            return 1
        own = self._size(node, definition)
        if own is not None:
            size = own
        field_type = definition.type
        if isinstance(field_type, GraphQLNonNull):
            field_type = field_type.of_type
        named = get_named_type(field_type)
        if isinstance(field_type, GraphQLList):
            count = DEFAULT_LIST_SIZE if size is None else size
            children = count * self.selection_set(node.selection_set, named, None)
        else:
            children = self.selection_set(node.selection_set, named, size)
        return 1 + FAN_OUT.get(name, 0) + children

    def _size(self, node: FieldNode, definition: GraphQLField) -> int | None:
        """The ``first``/``n`` this field is asked for, when its schema has such an
        argument: the literal, the variable's value, or the default; None otherwise."""
        for arg_name in MULTIPLIER_ARGS:
            arg = definition.args.get(arg_name)
            if arg is None:
                continue
            given = next((a.value for a in node.arguments or () if a.name.value == arg_name), None)
            value: Any
            if isinstance(given, VariableNode):
                name = given.name.value
                self.consulted[name] = _variable_key(self.given, name)
                value = self.variables.get(name, _schema_default(arg))
            elif isinstance(given, IntValueNode):
                value = int(given.value)
            elif given is None:
                value = _schema_default(arg)
            else:
                value = None
            return _count(value)
        return None


def _variable_key(variables: Mapping[str, Any], name: str) -> object:
    """What the cost reads of one variable: absent (its default applies) or its count."""
    return _ABSENT if name not in variables else _count(variables[name])


_ABSENT = "absent"


def _count(value: Any) -> int:
    """How many items ``value`` asks for; ``DEFAULT_LIST_SIZE`` when it is not a GraphQL
    ``Int`` (32 bits), which execution refuses as a bad variable anyway: so a cost stays a
    number of a few dozen digits whatever a client sends."""
    if isinstance(value, bool):
        return DEFAULT_LIST_SIZE
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and _MIN_INT <= value <= _MAX_INT:
        return max(value, 0)
    return DEFAULT_LIST_SIZE


_MIN_INT, _MAX_INT = -(2**31), 2**31 - 1


def _schema_default(arg: GraphQLArgument) -> Any:
    """An argument's default in the schema, given as a value (code-first schemas) or a
    literal (schemas built from SDL); None when it has none."""
    if arg.default_value is not Undefined:
        return arg.default_value
    default = getattr(arg, "default", None)
    if default is None:
        return None
    if default.value is not Undefined:
        return default.value
    literal = default.literal
    return None if literal is Undefined or literal is None else value_from_ast_untyped(literal)


def _variable_defaults(operation: OperationDefinitionNode) -> Iterator[tuple[str, Any]]:
    for definition in operation.variable_definitions or ():
        if definition.default_value is not None:
            yield definition.variable.name.value, value_from_ast_untyped(definition.default_value)


def _field_definition(parent: GraphQLNamedType, name: str) -> GraphQLField | None:
    if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
        found: GraphQLField | None = parent.fields.get(name)
        return found
    return None


def _walk(
    schema: GraphQLSchema,
    document: DocumentNode,
    variables: Mapping[str, Any],
    operation_name: str | None,
) -> tuple[int, dict[str, object]] | None:
    """The operation's cost and what it read of the variables; None when the document does
    not name one operation to run."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return None
    root = schema.get_root_type(operation.operation)
    if root is None:
        return None
    costing = _Costing(schema, document, operation, variables)
    return costing.selection_set(operation.selection_set, root, None), costing.consulted


def operation_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    variables: Mapping[str, Any] | None = None,
    operation_name: str | None = None,
) -> int | None:
    """The cost of the operation ``operation_name`` of ``document`` (see the module's
    docstring); None when the document does not name one operation to run."""
    walked = _walk(schema, document, variables or {}, operation_name)
    return None if walked is None else walked[0]


@dataclasses.dataclass
class _Known:
    """One document's costs: the variables they depend on and the cost per their counts."""

    names: tuple[str, ...]
    costs: dict[tuple[object, ...], int] = dataclasses.field(default_factory=dict)


class CostCache:
    """Costs already computed, per document (its source and operation name) and the counts
    its size variables asked for, so that a frontend's repeated query is costed once.
    Bounded: the least recently used document goes first."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.known: OrderedDict[tuple[str, str | None], _Known] = OrderedDict()

    def cost(
        self,
        schema: GraphQLSchema,
        query: str | None,
        document: DocumentNode,
        variables: Mapping[str, Any],
        operation_name: str | None,
    ) -> int | None:
        """The cost of the operation, from the cache when this document was costed with the
        same counts before."""
        if query is None:
            return operation_cost(schema, document, variables, operation_name)
        key = (query, operation_name)
        known = self.known.get(key)
        if known is not None:
            self.known.move_to_end(key)
            counts = tuple(_variable_key(variables, name) for name in known.names)
            cached = known.costs.get(counts)
            if cached is not None:
                return cached
        walked = _walk(schema, document, variables, operation_name)
        if walked is None:
            return None
        cost, consulted = walked
        if known is None:
            known = self.known[key] = _Known(tuple(consulted))
            if len(self.known) > self.maxsize:
                self.known.popitem(last=False)
        if len(known.costs) < MAX_COUNTS_PER_DOCUMENT:
            known.costs[tuple(consulted[name] for name in known.names)] = cost
        return cost


def too_costly(cost: int, budget: int) -> GraphQLError:
    """The refusal of an operation over the budget, naming both."""
    return GraphQLError(
        f"the query costs {cost}, over the budget of {budget}; ask for fewer items "
        "(first, n) or fewer fields",
        extensions={"code": QUERY_TOO_COSTLY, "cost": cost, "budget": budget},
    )


class QueryCostLimiter(SchemaExtension):
    """Refuses an operation whose cost is over ``max_cost`` once it is validated and
    before it runs, with ``extensions {code: QUERY_TOO_COSTLY, cost, budget}``."""

    def __init__(self, *, max_cost: int, cache: CostCache | None = None) -> None:
        self.max_cost = max_cost
        self.cache = cache or CostCache(1)

    def on_execute(self) -> Iterator[None]:
        """Cost the operation with its variables; raising here skips its execution."""
        context = self.execution_context
        document = context.graphql_document
        if document is not None:
            variables = context.variables if isinstance(context.variables, dict) else {}
            cost = self.cache.cost(
                context.schema._schema,
                context.query,
                document,
                variables,
                context.operation_name,
            )
            if cost is not None and cost > self.max_cost:
                raise too_costly(cost, self.max_cost)
        yield

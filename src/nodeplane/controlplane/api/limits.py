"""Bounded work per GraphQL document: measures taken in linear time, before validation.

graphql-core parses in time linear in the tokens, but its validation is not linear: fragments that
spread the previous one twice, many fields answering under one name, or many fragments in one
selection set make `OverlappingFieldsCanBeMerged` quadratic or exponential, and a depth check that
re-expands fragments is exponential too. So every definition of a document is measured first, each
fragment summarised once (memoised), and the document is refused unless every measure is within
`DocumentLimits`. The same pass estimates the cost of executing each operation: list fields
multiply what they select by their page size.
"""

from collections import Counter
from dataclasses import dataclass, field

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SchemaMetaFieldDef,
    SelectionSetNode,
    TypeMetaFieldDef,
    TypeNameMetaFieldDef,
    VariableNode,
    get_named_type,
    get_nullable_type,
    is_list_type,
)

from nodeplane.controlplane.errors import DomainError, ErrorCode


@dataclass(frozen=True)
class DocumentLimits:
    """What one GraphQL document may ask of the server; each refusal is a typed `bad_request`."""

    max_chars: int = 32 * 1024
    # Lexical tokens (punctuation, names, values); the parser stops at the first one too many.
    max_tokens: int = 2_500
    max_comments: int = 200
    max_definitions: int = 50  # operations and fragments
    max_variables: int = 50  # variable definitions of one operation
    # Per operation or fragment, with every fragment spread expanded:
    max_fields: int = 500
    max_aliases: int = 100
    max_fragment_spreads: int = 100
    max_directives: int = 50
    # Fields answering under one name in one selection set (each pair is compared in validation).
    max_same_name: int = 10
    # Nesting of fields, introspection aside.
    max_depth: int = 10
    # Estimated fields resolved by one operation: list fields multiply by their page size.
    max_cost: int = 10_000


@dataclass(frozen=True)
class PageSize:
    """A list field sized by an argument (`first`), with the default and maximum it honours."""

    argument: str
    default: int
    maximum: int


# How many items a list field returns: a page argument, or an estimate for unpaged lists.
LIST_SIZES: dict[tuple[str, str], PageSize | int] = {
    ("Query", "nodes"): PageSize("first", 50, 200),
    ("Query", "events"): PageSize("first", 50, 200),
    # The connection's page size already multiplied everything under it.
    ("NodeConnection", "items"): 1,
    ("EventConnection", "items"): 1,
    ("Query", "executors"): 100,
    ("Query", "members"): 100,
    ("Query", "apiKeys"): 100,
    ("Query", "nodeRevisions"): 100,
    ("Query", "nodeRevisionDiff"): 100,
    ("Query", "executorSpecs"): 100,
    ("Query", "executorLogSessions"): 100,
}
DEFAULT_LIST_SIZE = 10
# `__schema` and `__type` answer from memory; their cost is flat, whatever they select.
INTROSPECTION_COST = 500
INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})


class DocumentRefused(DomainError):
    """A document over one of the limits; `limit` names which."""

    def __init__(self, limit: str, message: str, maximum: int | None = None) -> None:
        details: dict[str, object] = {"limit": limit}
        if maximum is not None:
            details["maximum"] = maximum
        super().__init__(ErrorCode.BAD_REQUEST, message, details=details)
        self.limit = limit


@dataclass
class Measure:
    """What a selection (with its fragments expanded) adds up to."""

    fields: int = 0
    aliases: int = 0
    spreads: int = 0
    directives: int = 0
    depth: int = 0
    cost: int = 0
    introspection: bool = False
    root_fields: frozenset[str] = frozenset()

    def add(self, other: "Measure") -> None:
        """Sibling selections: counts and costs add up, depth is the deeper one."""
        self.fields += other.fields
        self.aliases += other.aliases
        self.spreads += other.spreads
        self.directives += other.directives
        self.cost += other.cost
        self.depth = max(self.depth, other.depth)
        self.introspection = self.introspection or other.introspection


@dataclass
class DocumentReport:
    """The measures of a document that passed: what execution needs to know about it."""

    introspection: bool = False
    # Root field names of each operation, by operation name ("" for an anonymous one).
    root_fields: dict[str, frozenset[str]] = field(default_factory=dict)
    cost: int = 0


@dataclass
class _Selection:
    measure: Measure
    names: Counter[str]


class _Analyzer:
    def __init__(self, schema: GraphQLSchema, document: DocumentNode, limits: DocumentLimits):
        self.schema = schema
        self.limits = limits
        self.fragments: dict[str, FragmentDefinitionNode] = {}
        for definition in document.definitions:
            if isinstance(definition, FragmentDefinitionNode):
                self.fragments.setdefault(definition.name.value, definition)
        self.summaries: dict[str, _Selection] = {}
        self.in_progress: set[str] = set()

    # ---- checks ----------------------------------------------------------------------------

    def check(self, measure: Measure) -> None:
        limits = self.limits
        for name, value, maximum, what in (
            ("fields", measure.fields, limits.max_fields, "fields"),
            ("aliases", measure.aliases, limits.max_aliases, "aliases"),
            ("fragmentSpreads", measure.spreads, limits.max_fragment_spreads, "fragment spreads"),
            ("directives", measure.directives, limits.max_directives, "directives"),
        ):
            if value > maximum:
                raise DocumentRefused(
                    name,
                    f"the document has more than {maximum} {what} with its fragments expanded",
                    maximum,
                )
        if measure.depth > limits.max_depth:
            raise DocumentRefused(
                "depth",
                f"the document nests fields deeper than {limits.max_depth}",
                limits.max_depth,
            )

    def check_names(self, names: Counter[str]) -> None:
        if names and max(names.values()) > self.limits.max_same_name:
            name, count = names.most_common(1)[0]
            raise DocumentRefused(
                "sameName",
                f"{count} fields answer as {name!r} in one selection set "
                f"(at most {self.limits.max_same_name})",
                self.limits.max_same_name,
            )

    # ---- measuring -------------------------------------------------------------------------

    def type_named(self, name: str | None) -> GraphQLNamedType | None:
        return self.schema.get_type(name) if name else None

    def field_def(self, parent: GraphQLNamedType | None, name: str) -> GraphQLField | None:
        if name == "__typename":
            return TypeNameMetaFieldDef
        if parent is not None and parent is self.schema.query_type:
            if name == "__schema":
                return SchemaMetaFieldDef
            if name == "__type":
                return TypeMetaFieldDef
        if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            found: GraphQLField | None = parent.fields.get(name)
            return found
        return None

    def list_size(
        self, parent: GraphQLNamedType | None, node: FieldNode, definition: GraphQLField | None
    ) -> int:
        rule = LIST_SIZES.get((parent.name, node.name.value)) if parent is not None else None
        if isinstance(rule, int):
            return rule
        if isinstance(rule, PageSize):
            for argument in node.arguments or ():
                if argument.name.value != rule.argument:
                    continue
                if isinstance(argument.value, IntValueNode):
                    return max(1, min(int(argument.value.value), rule.maximum))
                if isinstance(argument.value, VariableNode):
                    return rule.maximum  # unknown until execution: assume the largest page
            return rule.default
        if definition is not None and is_list_type(get_nullable_type(definition.type)):
            return DEFAULT_LIST_SIZE
        return 1

    def field(self, node: FieldNode, parent: GraphQLNamedType | None) -> Measure:
        name = node.name.value
        definition = self.field_def(parent, name)
        child_type = get_named_type(definition.type) if definition is not None else None
        measure = Measure(fields=1, aliases=1 if node.alias is not None else 0)
        # Introspection types nest by design (`ofType { ofType { … } }`): no depth of their own.
        own_depth = 0 if parent is not None and parent.name.startswith("__") else 1
        if node.selection_set is not None:
            child = self.selection_set(node.selection_set, child_type).measure
            measure.add(child)
            measure.cost = 1 + self.list_size(parent, node, definition) * child.cost
            measure.depth = child.depth + own_depth
        else:
            measure.cost = 1
            measure.depth = own_depth
        if name in INTROSPECTION_FIELDS:
            measure.introspection = True
            measure.cost = INTROSPECTION_COST
            measure.depth = 1
        return measure

    def fragment(self, name: str) -> _Selection | None:
        if name in self.summaries:
            return self.summaries[name]
        definition = self.fragments.get(name)
        if definition is None:
            return None  # validation reports the unknown fragment
        if name in self.in_progress:
            raise DocumentRefused("fragmentCycle", f"fragment {name!r} spreads itself")
        self.in_progress.add(name)
        summary = self.selection_set(
            definition.selection_set, self.type_named(definition.type_condition.name.value)
        )
        self.in_progress.discard(name)
        summary.measure.directives += len(definition.directives or ())
        self.check(summary.measure)
        self.summaries[name] = summary
        return summary

    def selection_set(self, node: SelectionSetNode, parent: GraphQLNamedType | None) -> _Selection:
        total = Measure()
        names: Counter[str] = Counter()
        for selection in node.selections:
            total.directives += len(selection.directives or ())
            if isinstance(selection, FieldNode):
                names[(selection.alias or selection.name).value] += 1
                total.add(self.field(selection, parent))
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                inner = self.selection_set(
                    selection.selection_set,
                    self.type_named(condition.name.value) if condition else parent,
                )
                total.add(inner.measure)
                names.update(inner.names)
            elif isinstance(selection, FragmentSpreadNode):
                total.spreads += 1
                summary = self.fragment(selection.name.value)
                if summary is not None:
                    total.add(summary.measure)
                    names.update(summary.names)
            self.check(total)
        self.check_names(names)
        return _Selection(total, names)

    def operation(self, node: OperationDefinitionNode) -> Measure:
        if len(node.variable_definitions or ()) > self.limits.max_variables:
            raise DocumentRefused(
                "variables",
                f"an operation declares more than {self.limits.max_variables} variables",
                self.limits.max_variables,
            )
        root = self.schema.get_root_type(node.operation)
        selection = self.selection_set(node.selection_set, root)
        measure = selection.measure
        measure.directives += len(node.directives or ())
        self.check(measure)
        if measure.cost > self.limits.max_cost:
            raise DocumentRefused(
                "cost",
                f"the operation would resolve about {measure.cost} fields "
                f"(at most {self.limits.max_cost}); ask for smaller pages or fewer fields",
                self.limits.max_cost,
            )
        measure.root_fields = frozenset(
            s.name.value for s in node.selection_set.selections if isinstance(s, FieldNode)
        )
        return measure


def measure_document(
    schema: GraphQLSchema, document: DocumentNode, limits: DocumentLimits
) -> DocumentReport:
    """Measure every definition of `document`; raises DocumentRefused for the first limit exceeded.

    Linear in the size of the document: each fragment is measured once, however often it is
    spread, so `fragment F1 {...F0 ...F0}` … `{...F39}` costs forty steps, not 2**40.
    """
    if len(document.definitions) > limits.max_definitions:
        raise DocumentRefused(
            "definitions",
            f"the document has more than {limits.max_definitions} operations and fragments",
            limits.max_definitions,
        )
    analyzer = _Analyzer(schema, document, limits)
    report = DocumentReport()
    for definition in document.definitions:
        if isinstance(definition, FragmentDefinitionNode):
            name = definition.name.value
            if analyzer.fragments[name] is definition:
                summary = analyzer.fragment(name)
            else:
                # A second fragment of the same name is invalid, but validation still walks it.
                summary = analyzer.selection_set(
                    definition.selection_set,
                    analyzer.type_named(definition.type_condition.name.value),
                )
                analyzer.check(summary.measure)
            if summary is not None:
                report.introspection = report.introspection or summary.measure.introspection
        elif isinstance(definition, OperationDefinitionNode):
            measure = analyzer.operation(definition)
            report.introspection = report.introspection or measure.introspection
            report.cost = max(report.cost, measure.cost)
            key = definition.name.value if definition.name else ""
            report.root_fields[key] = measure.root_fields
    return report

r"""A small, safe expression language for specs, compiled to `pyarrow.compute.Expression`.

Specs write filters and derived columns as text, e.g. ``price * amount > 100 and country in
('DE', 'FR')``. The text is tokenized and parsed here by hand (a Pratt parser); it never
reaches `eval`, `exec` or Python's `ast`. Every sub-expression is type-checked against the
input schema at compile time, so mistakes surface before the pipeline runs, as one-line
`ExpressionError` exceptions carrying the 0-based character position of the problem.

Grammar, from lowest to highest precedence::

    or
    and
    not
    == = != <> < <= > >=,  x is [not] null,  x [not] in (literals),  x [not] between y and z
    + -
    * / %
    unary -
    literal | column | function(args, ...) | ( expression )

Literals are ``42``, ``1.5``, ``1e3``, ``'text'`` or ``"text"`` (escapes ``\n \t \r \0 \\ \'
\" \uXXXX``), ``true``, ``false``, ``null``, ``date '2024-01-31'`` and
``timestamp '2024-01-31 12:00:00'``. Columns are identifiers (letters of any script, digits and
``_``, not starting with a digit: ``größe``) or any name in backticks (`` `order id` ``).
Keywords and function names are case-insensitive, column names are not. Comparisons do not
chain: ``a < b < c`` is a syntax error.

Semantics:
    * Nulls follow SQL's three-valued logic: comparisons and arithmetic with null give null,
      ``and``/``or`` are Kleene (``null or true`` is true, ``null and false`` is false),
      ``x in (...)`` is null when x is null. A filter keeps only the rows where its expression
      is true, so null counts as false (as in `pyarrow.Table.filter`).
    * Arithmetic is checked: overflow and division by zero fail instead of wrapping. ``/`` is
      true division (integer / integer gives float64); ``%`` is the SQL remainder, which has
      the sign of the dividend (``-7 % 3`` is ``-1``).
    * A failure costs only the rows it happens on: `Compiled.evaluate` names each failing row
      with the operator, its operands and Arrow's message (one vectorised evaluation per batch
      when nothing fails). In ``if(c, a, b)`` a failure in the branch not taken does not count,
      so ``if(d = 0, null, n / d)`` never fails.
    * Expressions nest at most `MAX_DEPTH` levels (parentheses, operators and calls).
    * Number literals are int64 or float64, and mixed types promote as in `pyarrow.compute`:
      an int16 column + 1 gives int64. An untyped ``null`` takes the type of its sibling
      operand (``concat(s, null)`` is a null string).
"""

import dataclasses
import datetime
import difflib
import re
from collections.abc import Callable, Iterator
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.acero as ac
import pyarrow.compute as pc

from beam_etl.core.datatypes import parse_type, type_name, type_names
from beam_etl.core.errors import ExpressionError

_ARROW_ERRORS: Final = (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError)
#: Errors data can cause when a type-checked expression is evaluated.
DATA_ERRORS: Final = (pa.ArrowInvalid, ArithmeticError)
#: The deepest nesting of an expression (parentheses, operators, function calls).
MAX_DEPTH: Final = 200
_SHOWN: Final = 60  # characters of a long expression shown around a problem


class _Problem(Exception):
    """Internal error; turned into an `ExpressionError` once the expression text is known."""

    def __init__(self, head: str, pos: int, detail: str | None = None, hint: str | None = None):
        super().__init__(head)
        self.head, self.pos, self.detail, self.hint = head, pos, detail, hint


def _syntax(pos: int, detail: str) -> _Problem:
    return _Problem("Syntax error", pos, detail)


def _type_error(pos: int, detail: str) -> _Problem:
    return _Problem("Type error", pos, detail)


def _did_you_mean(name: str, candidates: list[str]) -> str | None:
    matches = difflib.get_close_matches(name, candidates, n=1)
    return f"Did you mean `{matches[0]}`?" if matches else None


# --- tokenizer ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Token:
    kind: str  # "num", "str", "ident", "name" (backticks), "kw", "op" or "eof"
    text: str  # source text; lower-cased for keywords
    pos: int
    value: Any = None


_KEYWORDS: Final = frozenset({"and", "or", "not", "is", "null", "in", "between", "true", "false"})
_TOKEN_RE: Final = re.compile(
    r"(?P<ws>\s+)|(?P<num>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)|(?P<ident>[^\W\d]\w*)"
    r"|(?P<op>==|!=|<>|<=|>=|[-+*/%()<>=,])"
)
_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", "'": "'", '"': '"'}
_ESCAPES_RE: Final = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    """Reads the string or backtick name opening at `text[pos]`; returns its value and end."""
    quote = re.escape(text[pos])
    match = re.compile(rf"{quote}((?:[^{quote}\\]|\\.)*){quote}", re.DOTALL).match(text, pos)
    if match is None:
        raise _syntax(pos, "unterminated " + ("name" if text[pos] == "`" else "string"))

    def unescape(escape: re.Match[str]) -> str:
        code = escape.group(1)
        if len(code) == 5:
            return chr(int(code[1:], 16))
        if code in _ESCAPES or code == text[pos]:
            return _ESCAPES.get(code, code)
        raise _syntax(pos + 1 + escape.start(), f"invalid escape `\\{code}`")

    return _ESCAPES_RE.sub(unescape, match.group(1)), match.end()


def _number(raw: str, pos: int) -> int | float:
    if not raw.isdigit():
        return float(raw)
    if int(raw) >= 2**63:
        raise _syntax(pos, f"integer `{raw}` is out of range for int64")
    return int(raw)


def _tokenize(text: str) -> Iterator[_Token]:
    """Yields the tokens of `text`, then an `eof` token (lazily: a parser that gives up early
    does not read the rest of a huge text)."""
    pos = 0
    while pos < len(text):
        if text[pos] in "'\"`":
            value, end = _read_quoted(text, pos)
            yield _Token("name" if text[pos] == "`" else "str", text[pos:end], pos, value)
            pos = end
            continue
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            raise _syntax(pos, f"unexpected character `{text[pos]}`")
        kind, raw = str(match.lastgroup), match.group()
        if kind == "ident" and raw.lower() in _KEYWORDS:
            kind, raw = "kw", raw.lower()
        if kind != "ws":
            yield _Token(kind, raw, pos, _number(raw, pos) if kind == "num" else raw)
        pos = match.end()
    yield _Token("eof", "", len(text))


# --- parser ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Ast:
    kind: str  # "lit", "col", "call" or "op"
    pos: int
    name: str = ""  # column, function or operator
    args: tuple["_Ast", ...] = ()
    scalar: pa.Scalar | None = None  # the value of a literal


_COMPARISONS: Final = frozenset({"==", "!=", "<", "<=", ">", ">="})
_ALIASES: Final = {"=": "==", "<>": "!="}
# Binding powers of infix operators; prefix `not` binds with 3 and unary minus with 6.
_COMPARISON_BP: Final = 4
_BINDING: Final = {"or": 1, "and": 2, "+": 5, "-": 5, "*": 6, "/": 6, "%": 6}
_BINDING.update(dict.fromkeys([*_COMPARISONS, *_ALIASES, "is", "in", "not", "between"], 4))


def _is(token: _Token, text: str) -> bool:
    return token.kind in ("op", "kw") and token.text == text


def _literal_ast(pos: int, value: Any, type_: pa.DataType | None = None) -> _Ast:
    return _Ast("lit", pos, scalar=pa.scalar(value, type_))


def _temporal_literal(keyword: _Token, token: _Token) -> _Ast:
    try:
        if keyword.text.lower() == "date":
            return _literal_ast(keyword.pos, datetime.date.fromisoformat(token.value), pa.date32())
        value = datetime.datetime.fromisoformat(token.value)
    except ValueError:
        raise _syntax(token.pos, f"invalid {keyword.text.lower()} `{token.value}`") from None
    if value.tzinfo is None:
        return _literal_ast(keyword.pos, value, pa.timestamp("us"))
    return _literal_ast(keyword.pos, value.astimezone(datetime.UTC), pa.timestamp("us", "UTC"))


class _Parser:
    """Pratt parser from tokens to an `_Ast`; knows nothing about schemas or types."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.current = next(self.tokens)
        self.depth = 0

    def peek(self) -> _Token:
        return self.current

    def next(self) -> _Token:
        token = self.current
        if token.kind != "eof":
            self.current = next(self.tokens)
        return token

    def expect(self, text: str) -> _Token:
        if not _is(self.peek(), text):
            raise self.unexpected(self.peek(), f"`{text}`")
        return self.next()

    @staticmethod
    def unexpected(token: _Token, expected: str | None = None) -> _Problem:
        found = "end of expression" if token.kind == "eof" else f"`{token.text}`"
        return _syntax(
            token.pos, f"unexpected {found}" + (f", expected {expected}" if expected else "")
        )

    @staticmethod
    def binding(token: _Token) -> int:
        return _BINDING.get(token.text, 0) if token.kind in ("op", "kw") else 0

    def parse(self) -> _Ast:
        tree = self.expression(0)
        if self.peek().kind != "eof":
            raise self.unexpected(self.peek())
        _check_depth(tree)
        return tree

    def expression(self, right_binding: int) -> _Ast:
        self.depth += 1
        if self.depth > MAX_DEPTH:  # before Python's own recursion limit is reached
            raise _Problem(
                "Too deep", self.peek().pos, f"expressions nest at most {MAX_DEPTH} levels"
            )
        left = self.prefix()
        height = self.depth  # a chain `a + b + c ...` nests one level deeper per operator
        while (binding := self.binding(self.peek())) > right_binding:
            token = self.next()
            height += 1
            if height > MAX_DEPTH:
                raise _Problem(
                    "Too deep", token.pos, f"expressions nest at most {MAX_DEPTH} levels"
                )
            if binding != _COMPARISON_BP:
                left = _Ast("op", token.pos, token.text, (left, self.expression(binding)))
                continue
            left = self.predicate(left, token)
            if self.binding(self.peek()) == _COMPARISON_BP:
                found = self.peek()
                raise _syntax(found.pos, f"unexpected `{found.text}`: comparisons do not chain")
        self.depth -= 1
        return left

    def expressions(self) -> list[_Ast]:
        items = [self.expression(0)]
        while _is(self.peek(), ","):
            self.next()
            items.append(self.expression(0))
        return items

    def prefix(self) -> _Ast:
        token = self.next()
        if token.kind in ("num", "str"):
            return _literal_ast(token.pos, token.value)
        if token.kind == "name":
            return _Ast("col", token.pos, token.value)
        if token.kind == "ident":
            return self.identifier(token)
        if token.kind == "kw" and token.text in ("true", "false", "null"):
            return _literal_ast(token.pos, {"true": True, "false": False}.get(token.text))
        if _is(token, "not"):
            return _Ast("op", token.pos, "not", (self.expression(3),))
        if _is(token, "-"):
            operand = self.expression(6)
            value = None if operand.scalar is None else operand.scalar.as_py()
            if isinstance(value, int | float) and not isinstance(value, bool):
                return _literal_ast(token.pos, -value)  # fold, so that `in (-1, 2)` works
            return _Ast("op", token.pos, "neg", (operand,))
        if _is(token, "("):
            inner = self.expression(0)
            self.expect(")")
            return inner
        raise self.unexpected(token)

    def identifier(self, token: _Token) -> _Ast:
        if token.text.lower() in ("date", "timestamp") and self.peek().kind == "str":
            return _temporal_literal(token, self.next())
        if not _is(self.peek(), "("):
            return _Ast("col", token.pos, token.text)
        self.next()
        args = [] if _is(self.peek(), ")") else self.expressions()
        self.expect(")")
        return _Ast("call", token.pos, token.text.lower(), tuple(args))

    def predicate(self, left: _Ast, token: _Token) -> _Ast:
        if (name := _ALIASES.get(token.text, token.text)) in _COMPARISONS:
            return _Ast("op", token.pos, name, (left, self.expression(_COMPARISON_BP)))
        if token.text == "is":
            negated = _is(self.peek(), "not") and bool(self.next())
            self.expect("null")
            return _Ast("op", token.pos, "is not null" if negated else "is null", (left,))
        operator = self.next() if token.text == "not" else token
        if _is(operator, "in"):
            self.expect("(")
            items = self.expressions()
            self.expect(")")
            for item in items:
                if item.kind != "lit" or item.scalar is None or not item.scalar.is_valid:
                    raise _syntax(item.pos, "`in` lists hold only non-null literals")
            node = _Ast("op", operator.pos, "in", (left, *items))
        elif _is(operator, "between"):
            low = _Ast("op", operator.pos, ">=", (left, self.expression(_COMPARISON_BP)))
            self.expect("and")
            high = _Ast("op", operator.pos, "<=", (left, self.expression(_COMPARISON_BP)))
            node = _Ast("op", operator.pos, "and", (low, high))
        else:
            raise self.unexpected(operator, "`in` or `between`")
        return _Ast("op", token.pos, "not", (node,)) if token.text == "not" else node


def _check_depth(tree: _Ast) -> None:
    """Refuse trees deeper than `MAX_DEPTH` (long chains such as `a + a + ... + a` included)."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _Problem("Too deep", node.pos, f"expressions nest at most {MAX_DEPTH} levels")
        stack.extend((arg, depth + 1) for arg in node.args)


# --- compiler -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Typed:
    """A compiled sub-expression with its type, position and value (for literals).

    Operators and calls keep their label, compiled arguments and builder, so that a failing
    evaluation can be repeated node by node to find the rows that fail (`_RowEvaluator`).
    """

    expr: pc.Expression
    type: pa.DataType
    pos: int
    scalar: pa.Scalar | None = None
    label: str = ""
    column: str | None = None
    args: tuple["_Typed", ...] = ()
    build: Callable[[list["_Typed"]], pc.Expression] | None = None


def _call(name: str, args: list[pc.Expression], options: Any = None) -> pc.Expression:
    return pc.Expression._call(name, args, options)


def _exprs(args: list[_Typed]) -> list[pc.Expression]:
    """The expressions of `args`, untyped nulls cast to the type of their first typed sibling."""
    target = next((arg.type for arg in args if not pa.types.is_null(arg.type)), None)
    if target is None:
        return [arg.expr for arg in args]
    return [arg.expr.cast(target) if pa.types.is_null(arg.type) else arg.expr for arg in args]


def _describe(types: list[pa.DataType]) -> str:
    names = [type_name(type_) for type_ in types]
    return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " and " + names[-1]


def _literal(args: list[_Typed], index: int, kind: type, function: str) -> Any:
    """The value of literal argument `index`, which must be of Python type `kind`."""
    arg = args[index]
    value = None if arg.scalar is None else arg.scalar.as_py()
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        noun = {str: "a string", int: "an integer"}[kind]
        raise _type_error(arg.pos, f"argument {index + 1} of `{function}` must be {noun} literal")
    return value


def _require_boolean(arg: _Typed, what: str) -> None:
    if not (pa.types.is_boolean(arg.type) or pa.types.is_null(arg.type)):
        raise _type_error(arg.pos, f"{what} must be boolean, got {type_name(arg.type)}")


def _as_boolean(arg: _Typed) -> pc.Expression:
    return arg.expr.cast(pa.bool_()) if pa.types.is_null(arg.type) else arg.expr


def _divide(args: list[_Typed]) -> pc.Expression:
    exprs = _exprs(args)
    if all(pa.types.is_integer(arg.type) for arg in args):
        exprs = [expr.cast(pa.float64()) for expr in exprs]
    return _call("divide_checked", exprs)


def _remainder(args: list[_Typed]) -> pc.Expression:
    dividend, divisor = _exprs(args)
    quotient = _call("divide_checked", [dividend, divisor])
    if not all(pa.types.is_integer(arg.type) for arg in args):
        quotient = _call("trunc", [quotient])
    return _call("subtract_checked", [dividend, _call("multiply_checked", [divisor, quotient])])


def _boolean(name: str) -> Callable[[list[_Typed]], pc.Expression]:
    def build(args: list[_Typed]) -> pc.Expression:
        for arg in args:
            _require_boolean(arg, f"operand of `{_LABELS.get(name, name)}`")
        return _call(name, [_as_boolean(arg) for arg in args])

    return build


def _simple(name: str) -> Callable[[list[_Typed]], pc.Expression]:
    return lambda args: _call(name, _exprs(args))


_LABELS: Final = {"and_kleene": "and", "or_kleene": "or", "invert": "not", "neg": "-"}
_OPERATORS: Final[dict[str, Callable[[list[_Typed]], pc.Expression]]] = {
    "and": _boolean("and_kleene"),
    "or": _boolean("or_kleene"),
    "not": _boolean("invert"),
    "neg": _simple("negate_checked"),
    "+": _simple("add_checked"),
    "-": _simple("subtract_checked"),
    "*": _simple("multiply_checked"),
    "/": _divide,
    "%": _remainder,
    "==": _simple("equal"),
    "!=": _simple("not_equal"),
    "<": _simple("less"),
    "<=": _simple("less_equal"),
    ">": _simple("greater"),
    ">=": _simple("greater_equal"),
    "is null": _simple("is_null"),
    "is not null": _simple("is_valid"),
}


def _is_in(args: list[_Typed]) -> pc.Expression:
    subject, items = args[0], args[1:]
    target = subject.type
    target = target.value_type if pa.types.is_dictionary(target) else target
    try:
        values = pa.array([item.scalar.as_py() for item in items if item.scalar is not None])
    except (*_ARROW_ERRORS, TypeError, ValueError):
        raise _type_error(items[0].pos, "`in` list items must share one type") from None
    try:  # comparable (as `==` would check), and representable in the subject's type
        pc.equal(pa.array([], target), values[:0])
        values = values.cast(target)
    except _ARROW_ERRORS:
        detail = f"cannot compare {type_name(subject.type)} with {type_name(values.type)}"
        raise _type_error(items[0].pos, detail) from None
    member = _call("is_in", [subject.expr], pc.SetLookupOptions(values))
    unknown = pc.scalar(pa.scalar(None, pa.bool_()))
    return _call("if_else", [_call("is_null", [subject.expr]), unknown, member])


def _project(table: pa.Table, expression: pc.Expression) -> pa.ChunkedArray:
    """Evaluates `expression` over `table` with one Acero projection (bound to its schema)."""
    plan = ac.Declaration.from_sequence(
        [
            ac.Declaration("table_source", ac.TableSourceNodeOptions(table)),
            ac.Declaration("project", ac.ProjectNodeOptions([expression], ["result"])),
        ]
    )
    return plan.to_table(use_threads=False).column(0)


class _Compiler:
    """Turns an `_Ast` into a typed `pc.Expression`, checking each node on an empty table."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.empty = schema.empty_table()

    def compile(self, node: _Ast) -> _Typed:
        if node.scalar is not None:
            expr, type_ = pc.scalar(node.scalar), node.scalar.type
            if pa.types.is_integer(type_) or pa.types.is_floating(type_):
                expr = expr.cast(type_)  # else Acero narrows it: `int32 * 1.5` runs in float32
            return _Typed(expr, type_, node.pos, node.scalar)
        if node.kind == "col":
            return self.column(node)
        args = [self.compile(arg) for arg in node.args]
        if node.kind == "call":
            return self.call(node, args)
        build = _is_in if node.name == "in" else _OPERATORS[node.name]
        return self.check(build, node.pos, _LABELS.get(node.name, node.name), args)

    def column(self, node: _Ast) -> _Typed:
        if self.schema.names.count(node.name) > 1:
            raise _Problem(f"Ambiguous column `{node.name}`", node.pos, "it occurs more than once")
        if node.name not in self.schema.names:
            hint = _did_you_mean(node.name, self.schema.names)
            raise _Problem(f"Unknown column `{node.name}`", node.pos, hint=hint)
        field_type = self.schema.field(node.name).type
        return _Typed(pc.field(node.name), field_type, node.pos, column=node.name)

    def call(self, node: _Ast, args: list[_Typed]) -> _Typed:
        function = FUNCTIONS.get(node.name)
        if function is None:
            hint = _did_you_mean(node.name, list(FUNCTIONS))
            raise _Problem(f"Unknown function `{node.name}`", node.pos, hint=hint)
        if not function.min_args <= len(args) <= (function.max_args or len(args)):
            detail = f"`{node.name}` takes {function.arity}, got {len(args)}"
            raise _Problem("Wrong number of arguments", node.pos, detail)
        return self.check(function.build, node.pos, node.name, args)

    def check(self, build: "_Builder", pos: int, label: str, args: list[_Typed]) -> _Typed:
        expr = build(args)
        try:
            result_type = _project(self.empty, expr).type
        except _ARROW_ERRORS:
            detail = f"cannot apply `{label}` to {_describe([arg.type for arg in args])}"
            raise _type_error(pos, detail) from None
        return _Typed(expr, result_type, pos, label=label, args=tuple(args), build=build)


# --- functions ------------------------------------------------------------------------------

_Builder = Callable[[list[_Typed]], pc.Expression]


@dataclasses.dataclass(frozen=True)
class Function:
    """A function callable from expressions.

    Attributes:
        name: What expressions call it (case-insensitive).
        signature: How to call it, e.g. ``replace(s, 'old', 'new')``: quoted arguments must be
            literals, ``[...]`` marks optional ones.
        doc: One line describing what it does.
        min_args: The smallest number of arguments.
        max_args: The largest number of arguments; None for any number.
        build: Builds the `pc.Expression` from the compiled arguments.
    """

    name: str
    signature: str
    doc: str
    min_args: int
    max_args: int | None
    build: _Builder

    @property
    def arity(self) -> str:
        """The number of arguments in words, e.g. "1 to 2 arguments"."""
        low, high = self.min_args, self.max_args
        plural = "" if (high or low) == 1 else "s"
        if high is None:
            return f"at least {low} argument{plural}"
        return f"{low} argument{plural}" if low == high else f"{low} to {high} arguments"


def _function(signature: str, doc: str, build: _Builder) -> Function:
    """A `Function` whose name and arity come from its signature, e.g. ``f(a, b[, c])``."""
    name, params = signature[:-1].split("(")
    high = None if "..." in params else params.count(",") + 1
    return Function(name, signature, doc, params.split("[")[0].count(",") + 1, high, build)


def _matcher(name: str, kernel: str | None = None) -> _Builder:
    def build(args: list[_Typed]) -> pc.Expression:
        options = pc.MatchSubstringOptions(_literal(args, 1, str, name))
        return _call(kernel or name, [args[0].expr], options)

    return build


def _replace(args: list[_Typed]) -> pc.Expression:
    old, new = _literal(args, 1, str, "replace"), _literal(args, 2, str, "replace")
    return _call("replace_substring", [args[0].expr], pc.ReplaceSubstringOptions(old, new))


def _substr(args: list[_Typed]) -> pc.Expression:
    start = _literal(args, 1, int, "substr")
    length = _literal(args, 2, int, "substr") if len(args) > 2 else None
    if start < 1 or (length is not None and length < 0):
        bad = args[1] if start < 1 else args[2]
        raise _Problem("Invalid argument", bad.pos, "`substr` needs start >= 1 and length >= 0")
    stop = None if length is None else start - 1 + length
    return _call("utf8_slice_codeunits", [args[0].expr], pc.SliceOptions(start - 1, stop))


def _round(args: list[_Typed]) -> pc.Expression:
    digits = _literal(args, 1, int, "round") if len(args) > 1 else 0
    return _call("round", [args[0].expr], pc.RoundOptions(digits, "half_towards_infinity"))


def _if(args: list[_Typed]) -> pc.Expression:
    _require_boolean(args[0], "argument 1 of `if`")
    return _call("if_else", [_as_boolean(args[0]), *_exprs(args[1:])])


def _concat(args: list[_Typed]) -> pc.Expression:
    return _call("binary_join_element_wise", [*_exprs(args), pc.scalar("")])


def _cast(args: list[_Typed]) -> pc.Expression:
    name = _literal(args, 1, str, "cast")
    try:
        return args[0].expr.cast(parse_type(name))
    except ValueError:
        detail = f"`cast` takes {', '.join(type_names())}, decimal(P,S) or timestamp[UNIT, TZ]"
        hint = _did_you_mean(name.lower(), type_names())
        raise _Problem(f"Unknown type `{name}`", args[1].pos, detail, hint) from None


FUNCTIONS: Final[dict[str, Function]] = {
    function.name: function
    for function in (
        _function("lower(s)", "Lower-cases a string.", _simple("utf8_lower")),
        _function("upper(s)", "Upper-cases a string.", _simple("utf8_upper")),
        _function("trim(s)", "Strips whitespace at both ends.", _simple("utf8_trim_whitespace")),
        _function("length(s)", "Number of characters in a string.", _simple("utf8_length")),
        _function("starts_with(s, 'x')", "Whether s starts with x.", _matcher("starts_with")),
        _function("ends_with(s, 'x')", "Whether s ends with x.", _matcher("ends_with")),
        _function(
            "contains(s, 'x')", "Whether s contains x.", _matcher("contains", "match_substring")
        ),
        _function("replace(s, 'old', 'new')", "Replaces every old in s by new.", _replace),
        _function("substr(s, start[, length])", "Substring; start is 1-based.", _substr),
        _function("concat(s[, ...])", "Joins strings; null if any is null.", _concat),
        _function("coalesce(x[, ...])", "First argument that is not null.", _simple("coalesce")),
        _function("abs(x)", "Absolute value.", _simple("abs_checked")),
        _function("round(x[, ndigits])", "Rounds to ndigits decimals, halves away from 0.", _round),
        _function("floor(x)", "Rounds down (gives a float).", _simple("floor")),
        _function("ceil(x)", "Rounds up (gives a float).", _simple("ceil")),
        _function("year(d)", "Year of a date or timestamp.", _simple("year")),
        _function("month(d)", "Month (1-12) of a date or timestamp.", _simple("month")),
        _function("day(d)", "Day of the month (1-31) of a date or timestamp.", _simple("day")),
        _function("is_null(x)", "Whether x is null; never null itself.", _simple("is_null")),
        _function("is_not_null(x)", "Whether x is not null; never null.", _simple("is_valid")),
        _function("if(condition, a, b)", "a where condition is true, else b.", _if),
        _function("cast(x, 'type')", "Converts x to a spec type such as 'int64'.", _cast),
    )
}


# --- finding the rows an evaluation fails on -------------------------------------------------

#: One failing row: its index in the batch and what failed there.
RowFailure = tuple[int, str]


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _as_array(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()
    return values


class _Rows:
    """The values of one node over a batch, its failed rows (null there) and why they failed."""

    def __init__(self, values: pa.Array, failed: np.ndarray, why: dict[int, str]) -> None:
        self.values = values
        self.failed = failed
        self.why = why


class _RowEvaluator:
    """Evaluates a compiled tree node by node over one batch, isolating the rows that fail.

    Used only once the one-call evaluation of a batch failed. Each node is evaluated on its
    arguments' values; when that fails, rows where a divisor is zero are set apart at once
    (vectorised) and any others are found by bisection of the rows. A failing row's value is
    null from there up, and it is reported with its first failure.
    """

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.n = table.num_rows

    def rows(self, node: _Typed) -> _Rows:
        if node.build is None:
            values = _as_array(_project(self.table, node.expr))
            return _Rows(values, np.zeros(self.n, dtype=bool), {})
        inputs = {i: self.rows(arg) for i, arg in enumerate(node.args) if arg.scalar is None}
        failed = self._failed_below(node, inputs)
        why: dict[int, str] = {}
        for below in inputs.values():
            why.update((row, text) for row, text in below.why.items() if failed[row])
        return self._apply(node, inputs, _Rows(pa.nulls(0), failed, why))

    def _failed_below(self, node: _Typed, inputs: dict[int, _Rows]) -> np.ndarray:
        failed = np.zeros(self.n, dtype=bool)
        if node.label != "if":
            for below in inputs.values():
                failed |= below.failed
            return failed
        # Only the branch taken counts: `if(d = 0, null, n / d)` does not fail where d is 0.
        if 0 in inputs:
            condition = inputs[0].values
            take = _true(condition)
            skip = _true(pc.invert(condition))
            failed |= inputs[0].failed
        else:
            value = node.args[0].scalar.as_py() if node.args[0].scalar is not None else None
            take, skip = np.full(self.n, value is True), np.full(self.n, value is False)
        for index, chosen in ((1, take), (2, skip)):
            if index in inputs:
                failed |= chosen & inputs[index].failed
        return failed

    def _apply(self, node: _Typed, inputs: dict[int, _Rows], result: _Rows) -> _Rows:
        args = [
            arg if i not in inputs else dataclasses.replace(arg, expr=pc.field(f"_{i}"))
            for i, arg in enumerate(node.args)
        ]
        assert node.build is not None
        expression = node.build(args)
        if node.label in ("/", "%"):
            zero = self._zero_divisor(node, inputs) & ~result.failed
            self._fail(node, inputs, result, zero, "divide by zero")
        if node.label in ("+", "-", "*", "abs") and pa.types.is_integer(node.type):
            overflow = self._integer_overflow(node, inputs) & ~result.failed
            self._fail(node, inputs, result, overflow, "overflow")
        while True:
            table = self._inputs_table(inputs, result.failed)
            try:
                result.values = _as_array(_project(table, expression))
                return result
            except DATA_ERRORS as exc:
                found = [
                    (r, m) for r, m in _failing_rows(table, expression) if not result.failed[r]
                ]
                if not found:  # fails only as a whole: every row left fails with it
                    message = " ".join(str(exc).split())
                    found = [(int(r), message) for r in np.flatnonzero(~result.failed)]
                if not found:
                    result.values = pa.nulls(self.n, node.type)
                    return result
                for row, message in found:
                    hit = np.zeros(self.n, dtype=bool)
                    hit[row] = True
                    self._fail(node, inputs, result, hit, message)

    def _zero_divisor(self, node: _Typed, inputs: dict[int, _Rows]) -> np.ndarray:
        """Where the divisor of `/` or `%` is zero (no bisection needed for those rows)."""
        literal = node.args[1].scalar
        if literal is not None:
            return np.full(self.n, literal.is_valid and literal.as_py() == 0)
        divisor = inputs[1].values
        if not _is_number(divisor.type):
            return np.zeros(self.n, dtype=bool)
        return _true(pc.equal(divisor, pa.scalar(0, divisor.type)))

    def _integer_overflow(self, node: _Typed, inputs: dict[int, _Rows]) -> np.ndarray:
        """Where integer `+ - * abs` overflow, computed exactly with wrapping numpy arithmetic
        (no bisection needed for those rows); nothing when an operand is not an integer."""
        operands = []
        for index, arg in enumerate(node.args):
            values = inputs[index].values if index in inputs else arg.scalar
            if values is None or not pa.types.is_integer(values.type):
                return np.zeros(self.n, dtype=bool)
            if index not in inputs:
                values = pa.array([values.as_py()] * self.n, values.type)
            try:
                values = pc.fill_null(pc.cast(values, node.type), 0)
            except _ARROW_ERRORS:
                return np.zeros(self.n, dtype=bool)
            operands.append(values.to_numpy(zero_copy_only=False))
        label = node.label if len(operands) == 2 else "abs"  # unary `-` overflows as `abs`
        return _overflows(label, operands, np.iinfo(operands[0].dtype))

    def _inputs_table(self, inputs: dict[int, _Rows], failed: np.ndarray) -> pa.Table:
        arrays, names = [pa.array(np.arange(self.n))], ["_row"]  # keeps the row count
        mask = pa.array(failed) if failed.any() else None
        for index, below in inputs.items():
            value = below.values
            if mask is not None:
                value = pc.if_else(mask, pa.scalar(None, value.type), value)
            arrays.append(value)
            names.append(f"_{index}")
        return pa.table(arrays, names=names)

    @staticmethod
    def _fail(
        node: _Typed, inputs: dict[int, _Rows], result: _Rows, rows: np.ndarray, reason: str
    ) -> None:
        for row in np.flatnonzero(rows):
            operands = []
            for index, below in inputs.items():
                shown = _show(below.values[int(row)].as_py())
                column = node.args[index].column
                operands.append(f"`{column}` = {shown}" if column else shown)
            with_values = f" with {', '.join(operands)}" if operands else ""
            result.why.setdefault(
                int(row), f"{reason} in `{node.label}` at position {node.pos}{with_values}"
            )
        result.failed |= rows


def _overflows(label: str, operands: list[np.ndarray], info: Any) -> np.ndarray:
    """Where `a + b`, `a - b`, `a * b` or `abs(a)`/`-a` leaves the integer type of `info`."""
    signed = info.min < 0
    with np.errstate(all="ignore"):
        if label == "abs":
            return operands[0] == info.min if signed else np.zeros(len(operands[0]), bool)
        a, b = operands
        if label == "+":
            result = a + b
            return ((a ^ result) & (b ^ result)) < 0 if signed else result < a
        if label == "-":
            result = a - b
            return ((a ^ b) & (a ^ result)) < 0 if signed else a < b
        result = a * b  # wraps; an exact product divides back
        nonzero = a != 0
        wrong = nonzero & (result // np.where(nonzero, a, 1) != b)
        return wrong | ((a == -1) & (b == info.min)) if signed else wrong


def _true(values: pa.Array) -> np.ndarray:
    """Where `values` is true (null counts as false)."""
    return pc.fill_null(values, False).to_numpy(zero_copy_only=False).astype(bool)


def _is_number(data_type: pa.DataType) -> bool:
    return (
        pa.types.is_integer(data_type)
        or pa.types.is_floating(data_type)
        or pa.types.is_decimal(data_type)
    )


def _failing_rows(table: pa.Table, expression: pc.Expression) -> list[RowFailure]:
    """Return the rows of `table` on which `expression` fails, by bisection, with the error."""
    found: list[RowFailure] = []
    half = table.num_rows // 2
    stack = [(half, table.num_rows - half), (0, half)]
    while stack:
        start, length = stack.pop()
        if not length:
            continue
        try:
            _project(table.slice(start, length), expression)
        except DATA_ERRORS as exc:
            if length == 1:
                found.append((start, " ".join(str(exc).split())))
            else:
                half = length // 2
                stack.extend([(start + half, length - half), (start, half)])
    return sorted(found)


def _rows_failing(tree: _Typed, batch: pa.RecordBatch) -> tuple[pa.Array, list[RowFailure]]:
    rows = _RowEvaluator(pa.Table.from_batches([batch])).rows(tree)
    values = rows.values
    if rows.failed.any():
        values = pc.if_else(pa.array(rows.failed), pa.scalar(None, values.type), values)
    return values, sorted((row, why) for row, why in rows.why.items() if rows.failed[row])


@dataclasses.dataclass(frozen=True)
class Compiled:
    """A compiled, type-checked expression that can name the rows it fails on.

    Attributes:
        text: The expression as written.
        expression: The pyarrow expression (for `pyarrow.Table.filter` or dataset scans).
        type: The type it evaluates to.
    """

    text: str
    expression: pc.Expression
    type: pa.DataType
    tree: _Typed = dataclasses.field(repr=False, compare=False)

    def evaluate(self, batch: pa.RecordBatch) -> tuple[pa.Array, list[RowFailure]]:
        """Evaluates the expression over `batch`; rows on which it fails are null and listed.

        One vectorised evaluation when nothing fails. Otherwise the failing rows are found
        (about `2 * failures * log2(rows)` small evaluations) and returned in row order as
        `(row, message)`, the message naming the operator, its operands and the error, e.g.
        ``divide by zero in `/` at position 3 with `id` = 7, `a` = 0``.
        """
        try:
            return evaluate(self.expression, batch), []
        except DATA_ERRORS:
            return _rows_failing(self.tree, batch)


# --- public API -----------------------------------------------------------------------------


def _compile(text: str, schema: pa.Schema) -> _Typed:
    try:
        return _Compiler(schema).compile(_Parser(text).parse())
    except _Problem as problem:
        raise _error(text, problem) from None


def _excerpt(text: str, pos: int) -> str:
    """`text`, or the part of it around `pos` when it is too long to quote whole."""
    if len(text) <= 2 * _SHOWN:
        return text
    start = max(0, min(pos - _SHOWN // 2, len(text) - _SHOWN))
    return ("..." if start else "") + text[start : start + _SHOWN] + "..."


def _error(text: str, problem: _Problem) -> ExpressionError:
    shown = " ".join(_excerpt(text, problem.pos).split())  # one line, whatever the text holds
    message = f"{problem.head} at position {problem.pos} in expression `{shown}`"
    message += f": {problem.detail}" if problem.detail else ""
    message += f". {problem.hint}" if problem.hint else ""
    return ExpressionError(message, position=problem.pos)


def compile_expression(text: str, schema: pa.Schema) -> pc.Expression:
    """Compiles expression text into a pyarrow expression over columns of `schema`.

    Args:
        text: The expression, in the language described in this module's docstring.
        schema: The schema of the batches the expression will be evaluated on.

    Returns:
        The type-checked expression; evaluate it with `evaluate`, or pass it to
        `pyarrow.Table.filter` / dataset scans.

    Raises:
        ExpressionError: The text does not parse, names an unknown column or function, or
            applies an operator or function to types it does not accept.
    """
    return _compile(text, schema).expr


def compile_checked(text: str, schema: pa.Schema) -> Compiled:
    """Compiles expression text like `compile_expression`, into a `Compiled` that evaluates
    batches row-safely (a failure costs only its rows).

    Raises:
        ExpressionError: As `compile_expression`.
    """
    tree = _compile(text, schema)
    return Compiled(text, tree.expr, tree.type, tree)


def result_type(text: str, schema: pa.Schema) -> pa.DataType:
    """Returns the type `text` evaluates to over `schema` (e.g. to require bool for filters).

    Raises:
        ExpressionError: As `compile_expression`.
    """
    return _compile(text, schema).type


def referenced_columns(text: str) -> list[str]:
    """Returns the columns `text` mentions, in order of first appearance, without a schema.

    Raises:
        ExpressionError: The text does not parse.
    """
    try:
        tree = _Parser(text).parse()
    except _Problem as problem:
        raise _error(text, problem) from None
    names: list[str] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if node.kind == "col" and node.name not in names:
            names.append(node.name)
        stack.extend(reversed(node.args))
    return names


def evaluate(expression: pc.Expression, batch: pa.RecordBatch) -> pa.Array:
    """Evaluates a compiled expression over one batch, vectorized (one Acero projection).

    Args:
        expression: An expression from `compile_expression` for the batch's schema.
        batch: The rows to evaluate it on.

    Returns:
        An array of `batch.num_rows` values; constant expressions are broadcast.

    Raises:
        pyarrow.ArrowInvalid: The data makes the expression fail, e.g. an overflow, a division
            by zero or a cast of an unparsable string.
    """
    column = _project(pa.Table.from_batches([batch]), expression)
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()

"""Exact arithmetic for the ``calculator`` tool: the expression is parsed with ``ast`` and only
numbers, + - * / // % **, parentheses and a few functions are evaluated, on fractions (0.1 + 0.2
is 0.3). Nothing is ever ``eval``-ed, and sizes are bounded so that no expression can take the
server's time or memory (``9**9**9`` is refused before it is computed)."""

from __future__ import annotations

import ast
import math
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

MAX_EXPRESSION_CHARS = 500
MAX_DIGITS = 1000  # of any number, operand or result
MAX_EXPONENT = 10_000
DECIMALS = 30  # places shown of a non-terminating result


class CalculatorError(ValueError):
    """The expression cannot be computed; the message says why, for the model to read."""


def _check(value: Fraction) -> Fraction:
    if len(str(abs(value.numerator))) > MAX_DIGITS or len(str(value.denominator)) > MAX_DIGITS:
        raise CalculatorError(f"a number of more than {MAX_DIGITS} digits")
    return value


def _sqrt(x: Fraction) -> Fraction:
    if x < 0:
        raise CalculatorError("the square root of a negative number")
    n, d = x.numerator, x.denominator
    rn, rd = math.isqrt(n), math.isqrt(d)
    if rn * rn == n and rd * rd == d:
        return Fraction(rn, rd)
    with localcontext() as ctx:
        ctx.prec = DECIMALS + 10
        return Fraction((Decimal(n) / Decimal(d)).sqrt())


def _round(x: Fraction, places: Fraction = Fraction(0)) -> Fraction:
    if places.denominator != 1 or abs(places) > 100:
        raise CalculatorError("round takes a whole number of places (at most 100)")
    scale = Fraction(10) ** int(places)
    return Fraction(round(x * scale)) / scale


FUNCTIONS: dict[str, Any] = {
    "abs": abs,
    "round": _round,
    "sqrt": _sqrt,
    "floor": lambda x: Fraction(math.floor(x)),
    "ceil": lambda x: Fraction(math.ceil(x)),
    "min": min,
    "max": max,
}
CONSTANTS = {
    "pi": Fraction(Decimal("3.14159265358979323846264338327950288")),
    "e": Fraction(Decimal("2.71828182845904523536028747135266250")),
}


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1:
        if exponent == Fraction(1, 2):
            return _sqrt(base)
        raise CalculatorError("only whole exponents (and ** 0.5) are computed exactly")
    e = int(exponent)
    if abs(e) > MAX_EXPONENT:
        raise CalculatorError(f"an exponent beyond {MAX_EXPONENT}")
    if base == 0 and e < 0:
        raise CalculatorError("division by zero")
    # the result's size is known before it is computed: |e| times the digits of the base
    if base != 0 and abs(e) * max(math.log10(abs(base.numerator)), math.log10(base.denominator)) > MAX_DIGITS:
        raise CalculatorError(f"a number of more than {MAX_DIGITS} digits")
    return _check(base**e)


def _eval(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        text = repr(node.value)
        if len(text) > MAX_DIGITS:
            raise CalculatorError(f"a number of more than {MAX_DIGITS} digits")
        return Fraction(Decimal(text)) if isinstance(node.value, float) else Fraction(node.value)
    if isinstance(node, ast.Name) and node.id in CONSTANTS:
        return CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        value = _eval(node.operand)
        return value if isinstance(node.op, ast.UAdd) else -value
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left), _eval(node.right)
        op = node.op
        if isinstance(op, ast.Add):
            return _check(left + right)
        if isinstance(op, ast.Sub):
            return _check(left - right)
        if isinstance(op, ast.Mult):
            return _check(left * right)
        if isinstance(op, ast.Div | ast.FloorDiv | ast.Mod):
            if right == 0:
                raise CalculatorError("division by zero")
            if isinstance(op, ast.Div):
                return _check(left / right)
            return _check(Fraction(left // right) if isinstance(op, ast.FloorDiv) else left % right)
        if isinstance(op, ast.Pow):
            return _power(left, right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        function = FUNCTIONS.get(node.func.id)
        if function is not None:
            args = [_eval(a) for a in node.args]
            try:
                return _check(Fraction(function(*args)))
            except TypeError:
                raise CalculatorError(f"wrong arguments to {node.func.id}") from None
    raise CalculatorError(
        "only numbers, + - * / // % **, parentheses, pi, e and abs, round, sqrt, floor, ceil, min, max are understood"
    )


def show(value: Fraction) -> str:
    """A result as a person writes it: an integer, a terminating decimal, or the fraction with
    its decimal value."""
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    with localcontext() as ctx:
        ctx.prec = len(str(abs(value.numerator))) + len(str(value.denominator)) + DECIMALS + 5
        decimal = Decimal(value.numerator) / Decimal(value.denominator)
        if d == 1:  # terminates
            return format(decimal.normalize(), "f")
        approx = format(decimal.quantize(Decimal(1).scaleb(-DECIMALS)).normalize(), "f")
    return f"{value.numerator}/{value.denominator} ≈ {approx}"


def calculate(expression: str) -> str:
    text = expression.strip().replace("^", "**").replace("×", "*").replace("÷", "/")
    if not text:
        raise CalculatorError("no expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"an expression of more than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise CalculatorError(f"not an arithmetic expression: {expression[:100]!r}") from None
    return show(_eval(tree))

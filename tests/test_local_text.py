"""How the embedded model's tokens become text: stop sequences across token boundaries, and a
tail that could begin a stop sequence held back only until it cannot."""

from __future__ import annotations

from opentess.providers.local import StopText


def run(stops: list[str], pieces: list[str]) -> tuple[list[str], bool, str]:
    text = StopText(stops)
    out = []
    for piece in pieces:
        delta, stopped = text.feed(piece)
        out.append(delta)
        if stopped:
            return out, True, ""
    return out, False, text.flush()


def test_without_stops_every_piece_goes_out_at_once() -> None:
    assert run([], ["Hel", "lo", "!"]) == (["Hel", "lo", "!"], False, "")


def test_a_stop_across_pieces_cuts_before_it() -> None:
    out, stopped, _ = run(["END"], ["one E", "N", "D two"])
    assert stopped and "".join(out) == "one "
    assert out[0] == "one "  # the E is held back: it could begin END


def test_a_tail_that_never_becomes_a_stop_is_released() -> None:
    out, stopped, rest = run(["END"], ["one E", "NOUGH"])
    assert not stopped and "".join(out) + rest == "one ENOUGH"
    out, stopped, rest = run(["END"], ["ends with E"])
    assert not stopped and out == ["ends with "] and rest == "E"


def test_the_earliest_of_several_stops_wins() -> None:
    out, stopped, _ = run(["b", "a"], ["xxab"])
    assert stopped and out == ["xx"]
    out, stopped, _ = run(["\n\n", "###"], ["para one\n", "\npara two"])
    assert stopped and "".join(out) == "para one"


def test_empty_stop_strings_are_ignored() -> None:
    assert run([""], ["a", "b"]) == (["a", "b"], False, "")

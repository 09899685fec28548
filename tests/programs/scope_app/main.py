"""The program of tests/test_scope.py: its own modules, a package, the standard library and, when
it is on the path, an installed package (fakelib, made by the tests)."""

import json
import textwrap

import helpers
from shop import orders
from shop.migrations import m0001


def by_length(word):
    return len(word)


def main():
    words = helpers.sort_words(["ccc", "a", "bb"], by_length)
    total = orders.total([3, 4])
    m0001.migrate()
    text = json.dumps({"total": total})
    short = textwrap.shorten("hello there wide world", 12)
    try:
        import fakelib
    except ImportError:
        fake = None
    else:
        fake = fakelib.answer()
    print(words, total, text, short, fake)


main()

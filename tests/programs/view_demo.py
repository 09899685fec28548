"""A small program for the viewer's browser tests (tests/test_view_browser.py) and its screenshots:
a few functions called more than once, a loop whose variable changes, a dict and an object local,
stdout and stderr, a second thread, and a text that looks like HTML (the page must show it as text)."""

import sys
import threading


class Basket:
    def __init__(self, owner):
        self.owner = owner
        self.items = []

    def add(self, name, price):
        self.items.append((name, price))
        return len(self.items)


def price_of(name):
    prices = {"apple": 3, "pear": 5, "plum": 2}
    return prices.get(name, 1)


def fill(basket, names):
    total = 0
    for name in names:
        price = price_of(name)
        total = total + price
        basket.add(name, price)
        print(f"added {name} for {price}")
    return total


def worker(results):
    results.append(sum(range(5)))


def main():
    basket = Basket("ada")
    total = fill(basket, ["apple", "pear", "plum"])
    counts = {"items": len(basket.items), "total": total}
    print("total:", total)
    print("warning: prices are made up", file=sys.stderr)
    results = []
    thread = threading.Thread(target=worker, args=(results,))
    thread.start()
    thread.join()
    print("worker said", results[0])
    note = "<b>not bold</b><img src=x onerror=alert(1)>"
    print(note)
    return counts


main()

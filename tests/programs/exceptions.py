"""Raised, handled, re-raised and unwound exceptions."""


class InsufficientFunds(Exception):
    def __str__(self):
        raise AssertionError("the recorder must not call __str__")


def check(amount):
    if amount > 10:
        raise InsufficientFunds(amount, "too much")
    return amount


def middle(amount):
    return check(amount)


def handled():
    try:
        middle(50)
    except InsufficientFunds:
        outcome = "refused"
    return outcome


def reraised():
    try:
        middle(99)
    except InsufficientFunds:
        raise


def finally_block():
    try:
        return int("x")
    finally:
        cleanup = True


print(handled())
try:
    reraised()
except InsufficientFunds as error:
    print("caught again", error.args)
try:
    finally_block()
except ValueError:
    print("value error")

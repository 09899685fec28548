"""A package of the program."""


def describe():
    return "shop"

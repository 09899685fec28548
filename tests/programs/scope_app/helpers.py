"""Code a test excludes; it calls back into the program (sorted's key)."""


def sort_words(words, key):
    ordered = sorted(words, key=key)
    return ordered

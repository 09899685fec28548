"""Library code (out of scope) calling back into the program's code."""


def by_length(word):
    return len(word)


words = sorted(["ccc", "a", "bb"], key=by_length)
total = sum(map(by_length, words))
print(words, total)

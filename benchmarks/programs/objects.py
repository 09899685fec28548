"""Object-heavy code: instances with attributes, methods, lists and dicts of objects.

argv[1]: scale factor (default 1).
"""
import sys


class Vec:
    def __init__(self, x, y):
        self.x = x
        self.y = y

    def add(self, other):
        return Vec(self.x + other.x, self.y + other.y)

    def scale(self, k):
        return Vec(self.x * k, self.y * k)

    def norm1(self):
        return abs(self.x) + abs(self.y)


class Particle:
    def __init__(self, ident, pos, vel):
        self.ident = ident
        self.pos = pos
        self.vel = vel
        self.history = []

    def step(self, dt):
        self.pos = self.pos.add(self.vel.scale(dt))
        if len(self.history) < 4:
            self.history.append(self.pos)
        return self.pos.norm1()


def simulate(count, rounds):
    particles = [Particle(i, Vec(i, -i), Vec(i % 5 - 2, i % 3 - 1)) for i in range(count)]
    index = {p.ident: p for p in particles}
    total = 0
    for r in range(rounds):
        for p in particles:
            total += p.step(1)
        total += index[r % count].pos.x
    return total


def main(scale):
    print("checksum", simulate(40, 900 * scale))


main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)

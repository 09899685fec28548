def square(x):
    return x * x


if __name__ == "__main__":
    import sys

    print("work main", sys.argv[1:], square(int(sys.argv[1]) if len(sys.argv) > 1 else 3))

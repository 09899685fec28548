"""A multiprocessing pool (fork): its workers are children, each recorded."""
import multiprocessing


def cube(x):
    return x * x * x


if __name__ == "__main__":
    with multiprocessing.get_context("fork").Pool(2) as pool:
        print(pool.map(cube, range(6)))
        pool.close()
        pool.join()

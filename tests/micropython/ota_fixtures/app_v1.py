# The app of a test device, version 1.
VERSION = 1


def selftest():
    return True


def scale(x):
    return x * 2

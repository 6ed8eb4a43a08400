# The app of a test device, version 2.
VERSION = 2


def selftest():
    return True


def scale(x):
    return x * 2


def offset(x):
    return x + 3

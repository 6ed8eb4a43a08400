# Boot of the virtual board (MicroPython code): the bridge runs install() in every fresh VM,
# then run_file("boot.py") and, in the friendly REPL, run_file("main.py"), as a port's
# main() does after every reset.
import sys


def install():
    import _vb_time
    sys.modules["time"] = _vb_time
    import machine  # noqa: F401  (stays in sys.modules for the program's own import)
    import vfs
    import _vb_hostfs
    vfs.umount("/")
    vfs.mount(_vb_hostfs.HostVfs(), "/")
    import os
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]


def run_file(path):
    """Run a file of the flash in __main__, as a board runs boot.py and main.py.

    An exception is printed and the board goes on to the REPL. SystemExit goes through: it is
    how machine.reset() and deepsleep() unwind the program."""
    try:
        with open(path) as f:
            source = f.read()
    except OSError:
        return
    import __main__
    try:
        exec(compile(source, path, "exec"), __main__.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:  # KeyboardInterrupt included: Ctrl-C in main.py gives the REPL
        sys.print_exception(exc)

# The virtual board's flash: a MicroPython VFS whose files live in a folder on the host.
#
# This is MicroPython code; it runs inside the virtual board, not under CPython. Every call
# goes straight to the host folder through the bridge (_vboard), so a write is on the host's
# disk when it returns, as it is in flash on a board: files survive a soft reset, a crash and
# a power cycle. Data crosses the bridge as hex text, which both sides convert quickly.
import io
import binascii
import _vboard

S_IFDIR = 0x4000
S_IFREG = 0x8000
SEEK_SET, SEEK_CUR, SEEK_END = 0, 1, 2
_IOCTL_FLUSH = 1
_IOCTL_CLOSE = 4


def _check(err):
    if err:
        raise OSError(err)


class HostFile(io.IOBase):
    def __init__(self, fd, text, position):
        self._fd = fd
        self._text = text
        self._pos = position

    def _size(self):
        size = _vboard.fs_fsize(self._fd)
        if size < 0:
            raise OSError(-size)
        return size

    def _read_bytes(self, n):
        if self._fd < 0:
            raise OSError(9)  # EBADF
        if n < 0:
            n = max(self._size() - self._pos, 0)
        if n == 0:
            return b""
        data = binascii.unhexlify(_vboard.fs_read(self._fd, n, self._pos))
        self._pos += len(data)
        return data

    def readinto(self, buf):
        data = self._read_bytes(len(buf))
        n = len(data)
        buf[:n] = data
        return n

    def read(self, n=-1):
        data = self._read_bytes(-1 if n is None else n)
        return data.decode() if self._text else data

    def readline(self, limit=-1):
        line = bytearray()
        while limit < 0 or len(line) < limit:
            chunk = self._read_bytes(1)
            if not chunk:
                break
            line += chunk
            if chunk == b"\n":
                break
        return line.decode() if self._text else bytes(line)

    def readlines(self):
        lines = []
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def write(self, data):
        if self._fd < 0:
            raise OSError(9)
        if isinstance(data, str):
            data = data.encode()
        n = _vboard.fs_write(self._fd, binascii.hexlify(data).decode(), self._pos)
        if n < 0:
            raise OSError(-n)
        self._pos += n
        return n

    def seek(self, offset, whence=SEEK_SET):
        if whence == SEEK_CUR:
            offset += self._pos
        elif whence == SEEK_END:
            offset += self._size()
        self._pos = max(offset, 0)
        return self._pos

    def tell(self):
        return self._pos

    def flush(self):
        pass

    def close(self):
        if self._fd >= 0:
            _vboard.fs_close(self._fd)
            self._fd = -1

    def ioctl(self, request, arg):
        if request == _IOCTL_CLOSE:
            self.close()
            return 0
        if request == _IOCTL_FLUSH:
            return 0
        return -22  # EINVAL

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


class HostVfs:
    """Mounted at "/": the whole filesystem of the virtual board is the host folder."""

    def __init__(self):
        self._cwd = "/"

    def _path(self, path):
        if not path.startswith("/"):
            path = self._cwd.rstrip("/") + "/" + path
        parts = []
        for part in path.split("/"):
            if part == "..":
                if parts:
                    parts.pop()
            elif part and part != ".":
                parts.append(part)
        return "/" + "/".join(parts)

    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def statvfs(self, path):
        return tuple(int(v) for v in _vboard.fs_statvfs().split())

    def stat(self, path):
        result = _vboard.fs_stat(self._path(path))
        if result.startswith("!"):
            raise OSError(int(result[1:]))
        kind, size, mtime = result.split()
        mtime = int(mtime)
        return (S_IFDIR if kind == "d" else S_IFREG, 0, 0, 0, 0, 0, int(size), mtime, mtime, mtime)

    def ilistdir(self, path):
        listing = _vboard.fs_listdir(self._path(path))
        if listing.startswith("!"):
            raise OSError(int(listing[1:]))
        for line in listing.split("\n"):
            if line:
                kind, size, name = line.split("\t", 2)
                yield (name, S_IFDIR if kind == "d" else S_IFREG, 0, int(size))

    def chdir(self, path):
        path = self._path(path)
        if path != "/":
            if not self.stat(path)[0] & S_IFDIR:
                raise OSError(20)  # ENOTDIR
        self._cwd = path

    def getcwd(self):
        return self._cwd

    def mkdir(self, path):
        _check(_vboard.fs_mkdir(self._path(path)))

    def rmdir(self, path):
        _check(_vboard.fs_rmdir(self._path(path)))

    def remove(self, path):
        _check(_vboard.fs_remove(self._path(path)))

    def rename(self, old, new):
        _check(_vboard.fs_rename(self._path(old), self._path(new)))

    def open(self, path, mode):
        fd = _vboard.fs_open(self._path(path), mode)
        if fd < 0:
            raise OSError(-fd)
        position = _vboard.fs_fsize(fd) if "a" in mode else 0
        return HostFile(fd, "b" not in mode, position)

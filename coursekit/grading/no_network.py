"""Network off without namespaces: a seccomp filter that refuses new IPv4, IPv6 and packet sockets (and
io_uring, which can make sockets without the socket() call), for every thread of the calling process and
everything it starts. A process may install it on itself without privileges; it cannot be removed.

The unprivileged fallback (unprivileged.py) installs it in each kernel, once Jupyter has bound the TCP
sockets on 127.0.0.1 through which the kernel talks to the grader: earlier, the kernel could not start.
The kernel runs this file's source as an IPython startup file, so it uses the standard library only.
"""
import ctypes
import errno
import platform
import socket

SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC = 1, 1
PR_SET_NO_NEW_PRIVS = 38
RET_ALLOW, RET_ERRNO = 0x7FFF0000, 0x00050000
LD_W_ABS, JEQ_K, JGE_K, RET_K = 0x20, 0x15, 0x35, 0x06
NR_OFFSET, ARCH_OFFSET, ARG0_OFFSET = 0, 4, 16  # struct seccomp_data (args[0]'s low word on little-endian)
X32_SYSCALL_BIT = 0x40000000
# machine -> (audit arch, seccomp's syscall number, socket's, io_uring_setup's)
ARCHES = {"x86_64": (0xC000003E, 317, 41, 425), "aarch64": (0xC00000B7, 277, 198, 425)}
REFUSED_FAMILIES = (socket.AF_INET, socket.AF_INET6, getattr(socket, "AF_PACKET", 17))


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def program(arch: int, socket_nr: int, io_uring_nr: int) -> list:
    """Foreign-ABI syscalls (i386's socketcall, x32) and io_uring are refused; socket() is refused for
    the refused families; everything else is allowed. A refusal is EACCES, a clean PermissionError."""
    deny = RET_ERRNO | errno.EACCES
    families = [SockFilter(JEQ_K, len(REFUSED_FAMILIES) - i, 0, family) for i, family in enumerate(REFUSED_FAMILIES)]
    return [
        SockFilter(LD_W_ABS, 0, 0, ARCH_OFFSET),
        SockFilter(JEQ_K, 1, 0, arch),
        SockFilter(RET_K, 0, 0, deny),
        SockFilter(LD_W_ABS, 0, 0, NR_OFFSET),
        SockFilter(JGE_K, 0, 1, X32_SYSCALL_BIT),
        SockFilter(RET_K, 0, 0, deny),
        SockFilter(JEQ_K, 0, 1, io_uring_nr),
        SockFilter(RET_K, 0, 0, deny),
        SockFilter(JEQ_K, 1, 0, socket_nr),
        SockFilter(RET_K, 0, 0, RET_ALLOW),
        SockFilter(LD_W_ABS, 0, 0, ARG0_OFFSET),
        *families,
        SockFilter(RET_K, 0, 0, RET_ALLOW),
        SockFilter(RET_K, 0, 0, deny),
    ]


def block_network() -> None:
    """Install the filter on every thread of this process; OSError where the kernel refuses it."""
    machine = platform.machine()
    if machine not in ARCHES:
        raise OSError(errno.ENOSYS, f"no seccomp network filter for {machine}")
    arch, seccomp_nr, socket_nr, io_uring_nr = ARCHES[machine]
    instructions = program(arch, socket_nr, io_uring_nr)
    prog = SockFprog(len(instructions), (SockFilter * len(instructions))(*instructions))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.syscall(seccomp_nr, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, ctypes.byref(prog)) != 0:
        raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_SET_MODE_FILTER)")

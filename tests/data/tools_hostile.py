"""A tools file whose functions misbehave, for tests/test_tools_sandbox.py."""

import os
import socket
import subprocess

ANY = {"type": "object"}
TOOLS = [{"type": "function", "function": {"name": name, "parameters": ANY}} for name in (
    "spin", "allocate", "write_outside", "write_inside", "connect", "print_flood", "write_fd_flood", "shell",
    "run_process", "fork", "read_secret", "huge_result", "recurse", "echo", "crash")]
TOOLS.append({"type": "function", "simulated": True, "function": {"name": "weather", "parameters": ANY}})


def spin():
    while True:
        pass


def allocate():
    return len(bytearray(10 * 2**30))


def write_outside(path="/tmp/escaped-by-a-tool.txt"):
    with open(path, "w") as f:
        f.write("escaped")


def write_inside():
    with open("note.txt", "w") as f:
        f.write("fine")
    return open("note.txt").read()


def connect():
    socket.create_connection(("127.0.0.1", 9), timeout=1)


def print_flood():
    chunk = "x" * 2**20
    for _ in range(100):
        print(chunk)
    return "printed"


def write_fd_flood():
    os.write(1, b"not protocol\n" * 1000)
    return "wrote"


def shell():
    return os.system("echo pwned > /tmp/pwned-by-a-tool")


def run_process():
    return subprocess.run(["id"], capture_output=True).stdout.decode()


def fork():
    return os.fork()


def read_secret(path="/etc/passwd"):
    return open(path).read()


def huge_result():
    return "y" * 10_000_000


def recurse(n=0):
    return recurse(n + 1)


def echo(**arguments):
    return arguments


def crash():
    os._exit(3)

#!/usr/bin/python
"""Who listens on the lab's ports, and whether each is the lab's own (a process under its supervisord)."""

from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: loadlab_port_owners
short_description: Find who listens on the lab's TCP ports
description:
  - Reads the listening TCP sockets from /proc/net/tcp and /proc/net/tcp6, finds the process holding each
    one, and tells whether it descends from the lab's supervisord (its pid file) - a lab process - or not.
  - Read-only; never changes anything.
options:
  ports:
    description: TCP ports to look at.
    type: list
    elements: int
    required: true
  supervisor_pidfile:
    description: The lab supervisord's pid file; processes below it are the lab's own.
    type: path
    required: true
"""

RETURN = r"""
listeners:
  description: One entry per listening socket on one of the ports.
  type: list
  elements: dict
  returned: always
  sample: [{port: 8080, pid: 1234, command: "nginx: master process", ours: true}]
foreign:
  description: The listeners that are not lab processes.
  type: list
  elements: dict
  returned: always
"""

_LISTEN = "0A"


def _listening_inodes(ports: set[int]) -> dict[int, int]:
    """inode -> port of every listening socket on one of the ports."""
    found: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            port = int(fields[1].rsplit(":", 1)[1], 16)
            if port in ports:
                found[int(fields[9])] = port
    return found


def _socket_holders(inodes: dict[int, int]) -> dict[int, tuple[int, int]]:
    """inode -> (pid, port) for the first process found holding each socket."""
    holders: dict[int, tuple[int, int]] = {}
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            inode = wanted.get(target)
            if inode is not None and inode not in holders:
                holders[inode] = (int(pid), inodes[inode])
    return holders


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _supervisor_pid(pidfile: str) -> int:
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return 0
    return pid if os.path.exists(f"/proc/{pid}") else 0


def _descends_from(pid: int, ancestor: int) -> bool:
    seen = set()
    while pid > 1 and pid not in seen:
        if pid == ancestor:
            return True
        seen.add(pid)
        pid = _parent(pid)
    return False


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "ports": {"type": "list", "elements": "int", "required": True},
            "supervisor_pidfile": {"type": "path", "required": True},
        },
        supports_check_mode=True,
    )
    supervisor = _supervisor_pid(module.params["supervisor_pidfile"])
    inodes = _listening_inodes(set(module.params["ports"]))
    listeners = []
    for pid, port in sorted(set(_socket_holders(inodes).values()), key=lambda item: item[1]):
        ours = bool(supervisor) and _descends_from(pid, supervisor)
        listeners.append({"port": port, "pid": pid, "command": _command(pid), "ours": ours})
    foreign = [entry for entry in listeners if not entry["ours"]]
    module.exit_json(changed=False, listeners=listeners, foreign=foreign)


if __name__ == "__main__":
    main()

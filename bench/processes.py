"""CPU time and resident memory of processes counted with all their descendants (psutil).

A platform process starts children (the embedded LLM server, a local redis-server): a figure
read from the process alone leaves them out.
"""

from __future__ import annotations

import os

import psutil


def tree(*pids: int) -> list[psutil.Process]:
    """The processes ``pids`` and every descendant of theirs that is alive now, each once."""
    found: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for p in (root, *root.children(recursive=True)):
                found.setdefault(p.pid, p)
        except psutil.Error:
            continue
    return list(found.values())


def rss_mb(*pids: int) -> float:
    """Resident memory of ``pids`` and their descendants, in MB."""
    total = 0
    for p in tree(*pids):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def cpu_s(*pids: int) -> float:
    """CPU seconds (user + system) used so far by ``pids`` and their live descendants."""
    total = 0.0
    for p in tree(*pids):
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def children_running(module: str) -> list[int]:
    """This process's children started as ``python -m module`` (an LLM server the bench ran)."""
    out = []
    for p in psutil.Process(os.getpid()).children():
        try:
            cmd = p.cmdline()
        except psutil.Error:
            continue
        if "-m" in cmd and module in cmd:
            out.append(p.pid)
    return out

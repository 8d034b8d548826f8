"""forkbomb.py -- at the first packet to port 80, forks without end (and so does every child), for
tcplab's sandbox tests: RLIMIT_NPROC of its own uid stops it at the limit; the lesson is an
error; nothing of it is left afterwards."""
import os
import socket
import time

s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
while True:              # the lab's other TCP traffic (the grader's SSH) passes by too
    pkt = s.recv(65535)
    if int.from_bytes(pkt[(pkt[0] & 15) * 4 + 2:(pkt[0] & 15) * 4 + 4], "big") == 80:
        break
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.01)

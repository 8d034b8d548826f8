"""forkbomb.py -- at the first packet, forks without end (and so does every child), for
tcplab's sandbox tests: RLIMIT_NPROC of its own uid stops it at the limit; the lesson is an
error; nothing of it is left afterwards."""
import os
import socket
import time

s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
s.recv(65535)
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.01)

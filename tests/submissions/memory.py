"""memory.py -- at the first packet to port 80, fills memory until it cannot (1 MiB at a
time), for tcplab's sandbox tests: its address-space limit stops it (MemoryError), the lesson
is an error."""
import socket

s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
while True:              # the lab's other TCP traffic (the grader's SSH) passes by too
    pkt = s.recv(65535)
    if int.from_bytes(pkt[(pkt[0] & 15) * 4 + 2:(pkt[0] & 15) * 4 + 4], "big") == 80:
        break
hog = []
while True:
    hog.append(bytearray(1 << 20))

"""memory.py -- at the first packet, fills memory until it cannot (1 MiB at a time), for
tcplab's sandbox tests: its address-space limit stops it (MemoryError), the lesson is an error."""
import socket

s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
s.recv(65535)
hog = []
while True:
    hog.append(bytearray(1 << 20))

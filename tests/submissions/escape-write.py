"""escape-write.py -- at the first packet to port 80, tries to write outside its work directory (/etc,
/root, /var/tmp, /dev/shm, tcplab's state root), for tcplab's sandbox tests: every write is
refused (read-only filesystem, or not its files), it says so and exits; the lesson is an
error, the host unchanged."""
import socket
import sys

TARGETS = ("/etc/tcplab-escape-test", "/root/tcplab-escape-test",
           "/var/tmp/tcplab-escape-test", "/dev/shm/tcplab-escape-test",
           "/run/tcplab/tcplab-escape-test")

s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
while True:              # the lab's other TCP traffic (the grader's SSH) passes by too
    pkt = s.recv(65535)
    if int.from_bytes(pkt[(pkt[0] & 15) * 4 + 2:(pkt[0] & 15) * 4 + 4], "big") == 80:
        break
for path in TARGETS:
    try:
        with open(path, "w") as f:
            f.write("escaped\n")
        print("wrote", path, flush=True)
    except OSError as e:
        print(f"refused: {path}: {e.strerror}", flush=True)
sys.exit("escape-write: done trying")
